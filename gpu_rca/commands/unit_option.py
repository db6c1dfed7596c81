"""`--unit`, shared by `ingest` and `serve`: which spans gpu-rca's collector did not stamp are inference spans."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from gpu_rca.correlate.store.units import Units

F = TypeVar("F", bound=Callable[..., Any])

HELP = (
    "Also count these spans as inference spans (repeatable): 'service=GLOB[,name=GLOB][,kind=KIND]"
    "[,attribute=KEY]'; a service alone means its server spans. For spans gpu-rca's collector did not stamp "
    "(docs/byo-spans.md)."
)


def unit_option(command: F) -> F:
    """Add `--unit RULE` (repeatable) to a command, passed as the tuple `units`."""
    return click.option("--unit", "units", multiple=True, metavar="RULE", help=HELP)(command)


def parse_units(texts: tuple[str, ...]) -> Units:
    """The rules, or a usage error naming what is wrong with one."""
    from gpu_rca.correlate.store.units import Units

    return Units.parse(texts)
