"""One shape for the ranking: weights quoted by docs/ranking.md with their values, one builder per catalog cause."""

from __future__ import annotations

import re

from gpu_rca.correlate.ranking import weights
from gpu_rca.correlate.ranking.causes import BUILDERS
from gpu_rca.schemas.causes import CAUSE_IDS
from tests.support import REPO


def test_every_weight_is_quoted_in_the_doc_with_its_value() -> None:
    doc = (REPO / "docs" / "ranking.md").read_text()
    section = doc.split("### Weights and thresholds (`correlate/ranking/weights.py`)", 1)[1].split("\n## ", 1)[0]
    quoted = {name: float(value) for name, value in re.findall(r"^\| `([A-Z_]+)` \| ([\d.]+) \|", section, re.M)}
    constants = {name: float(value) for name, value in vars(weights).items() if name.isupper()}
    assert constants, "weights.py names no constants"
    assert quoted == constants


def test_every_catalog_cause_has_one_builder_registered_by_its_id() -> None:
    assert sorted(r.cause for r in BUILDERS) == sorted(CAUSE_IDS)
