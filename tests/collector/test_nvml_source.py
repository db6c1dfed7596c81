"""`NvmlSource` against what satisfies it at run time: the installed pynvml and the lab's simulated NVML.

pynvml carries no type information, so mypy cannot see a binding that renames or reshapes a function the
collector calls; these tests can, and say which member and which binding version.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pynvml
import pytest

from gpu_rca import lab
from gpu_rca.collector import NvmlSource
from gpu_rca.collector._nvml_source import NvmlFieldValue

COLLECTOR = Path(__file__).resolve().parents[2] / "collector"
BINDING = f"nvidia-ml-py {metadata.version('nvidia-ml-py')}"


def _members() -> dict[str, object]:
    return {name: value for name, value in vars(NvmlSource).items() if name.startswith("nvml")}


def _positional_arity(method: Callable[..., object]) -> int:
    """How many arguments the collector passes: the protocol's positional-only parameters, less `self`."""
    parameters = list(inspect.signature(method).parameters.values())[1:]
    assert all(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in parameters)
    return len(parameters)


def _call_problems(source: object, label: str) -> list[str]:
    problems = []
    for name, member in _members().items():
        value = getattr(source, name, None)
        if isinstance(member, property):
            if not isinstance(value, int):
                problems.append(f"{label}: {name} is {value!r}, not an int constant")
            continue
        if not callable(value):
            problems.append(f"{label}: no function {name}")
            continue
        arity = _positional_arity(member)
        try:
            inspect.signature(value).bind(*range(arity))
        except TypeError as exc:
            problems.append(
                f"{label}: {name}{inspect.signature(value)} cannot take the {arity} arguments the collector passes ({exc})"
            )
    return problems


def test_the_installed_pynvml_has_every_member_the_collector_calls() -> None:
    problems = _call_problems(pynvml, BINDING)
    assert not problems, "NvmlSource no longer matches pynvml:\n" + "\n".join(problems)


def test_the_simulated_nvml_answers_every_member_the_collector_calls() -> None:
    nvml = lab.simulated_nvml([{"host": "h", "gpus": 1, "model": "A100-40GB"}], clock=lambda: 0)
    problems = _call_problems(nvml, "SimulatedNvml")
    assert not problems, "NvmlSource no longer matches the lab's SimulatedNvml:\n" + "\n".join(problems)


def test_the_protocol_lists_exactly_what_the_collector_calls() -> None:
    called = set()
    for path in COLLECTOR.glob("*.py"):
        if path.name != "_nvml_source.py":
            called |= set(re.findall(r"\.(nvml[A-Z]\w*)", path.read_text(encoding="utf-8")))
    called -= set(vars(NvmlFieldValue))  # a field value's own members (`answer.nvmlReturn`), not calls
    assert called == set(_members()), f"called but not declared: {sorted(called - set(_members()))}; " + (
        f"declared but not called: {sorted(set(_members()) - called)}"
    )


@pytest.mark.parametrize("name", ["nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex"])
def test_the_simulated_gpus_have_no_mig_slices(name: str) -> None:
    nvml = lab.simulated_nvml([{"host": "h", "gpus": 1, "model": "A100-40GB"}], clock=lambda: 0)
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetMigMode(handle)[0] == pynvml.NVML_DEVICE_MIG_DISABLE
    with pytest.raises(pynvml.NVMLError) as raised:
        getattr(nvml, name)(handle, *([0] if name.endswith("ByIndex") else []))
    assert raised.value.value == pynvml.NVML_ERROR_NOT_SUPPORTED
