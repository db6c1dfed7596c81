"""Lab scenarios (docs/contracts.md §5): YAML parsed with `safe_load`, validated strictly (unknown keys are errors)."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypedDict

import yaml

from gpu_rca.lab.device import normalize_fleet
from gpu_rca.lab.profiles import get_profile
from gpu_rca.schemas import timefmt
from gpu_rca.schemas.causes import CAUSE_IDS
from gpu_rca.schemas.errors import InputError, UsageError
from gpu_rca.schemas.timefmt import is_duration

NS = 1_000_000_000
DEFAULT_START = "2025-01-06T09:30:00Z"
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(s|min|h)$")
_RATE_PER_S = {"s": 1.0, "min": 1 / 60, "h": 1 / 3600}

MODELS = ("ddcolor_paper_tiny", "ddcolor_paper", "ddcolor_modelscope", "ddcolor_artistic")
FAULT_KINDS = (
    "traffic_shift",
    "thermal",
    "power_cap",
    "hw_slowdown",
    "ecc_uncorrectable",
    "xid",
    "gpu_lost",
    "foreign_process",
    "app_bug",
    "host_cpu_starvation",
    "memory_leak",
    "allocator_fragmentation",
)
_TOP_KEYS = ("name", "seed", "start", "duration", "scrape_interval", "fleet", "workload", "faults", "truth")
_WORKLOAD_KEYS = ("rate", "input_size", "task_type", "model", "timeout")
_FAULT_COMMON = ("kind", "start", "end", "gpu", "severity")
_FAULT_EXTRA = {
    "traffic_shift": ("rate", "input_size", "task_type", "model"),
    "xid": ("code",),
    "app_bug": ("model",),
    "memory_leak": ("version",),
}
#: The `error.type`s each cause's failures carry in the lab (several causes share one: ranking must reason).
EXPECTED_ERROR_TYPES: dict[str, frozenset[str]] = {
    "gpu_oom_large_inputs": frozenset({"cuda_oom"}),
    "gpu_memory_foreign_process": frozenset({"cuda_oom"}),
    "compute_saturation": frozenset({"timeout"}),
    "thermal_throttling": frozenset({"timeout"}),
    "power_capping": frozenset({"timeout"}),
    "hw_slowdown": frozenset({"timeout"}),
    "ecc_memory_errors": frozenset({"RuntimeError"}),  # "CUDA error: uncorrectable ECC error encountered"
    "gpu_fallen_off_bus": frozenset({"gpu_lost"}),
    "cuda_kernel_fault": frozenset({"cuda_illegal_address", "cuda_launch_failure"}),
    "application_error": frozenset({"ValueError"}),
    "host_bottleneck": frozenset({"timeout"}),
    "gpu_memory_leak": frozenset({"cuda_oom"}),
}
_NEEDS_GPU = frozenset(
    {
        "thermal",
        "power_cap",
        "hw_slowdown",
        "ecc_uncorrectable",
        "xid",
        "gpu_lost",
        "foreign_process",
        "host_cpu_starvation",
    }
)


@dataclass(frozen=True)
class Workload:
    """Poisson arrivals and the request mix."""

    rate_per_s: float
    input_size: dict[int, float]  # weights, normalised
    task_type: dict[str, float]
    model: dict[str, float]
    timeout_ns: int


class WorkloadOverrides(TypedDict, total=False):
    """The workload values a traffic_shift fault in force replaces."""

    rate_per_s: float
    input_size: dict[int, float]
    task_type: dict[str, float]
    model: dict[str, float]


@dataclass(frozen=True)
class Fault:
    """One injected fault: it changes the model's inputs inside [start_ns, end_ns) (offsets from the start)."""

    kind: str
    start_ns: int
    end_ns: int | None
    gpu: str | None
    severity: float
    rate_per_s: float | None = None
    input_size: dict[int, float] | None = None
    task_type: dict[str, float] | None = None
    model: dict[str, float] | str | None = None
    code: int | None = None
    #: memory_leak: the service version that leaks (run by the fault's GPU's host, or by every host).
    version: str | None = None

    def active(self, offset_ns: int) -> bool:
        """Whether the fault is in force `offset_ns` after the scenario's start."""
        return self.start_ns <= offset_ns and (self.end_ns is None or offset_ns < self.end_ns)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario."""

    name: str
    seed: int
    start_ns: int
    duration_ns: int
    scrape_interval_ns: int
    fleet: list[dict[str, Any]]
    workload: Workload
    faults: tuple[Fault, ...] = ()
    truth: dict[str, Any] | None = None
    source: str = "<memory>"
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


class _Where:
    """Error messages that name the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> InputError:
        return InputError(f"scenario {self.source}: {path}: {message}")

    def keys(self, data: Any, allowed: tuple[str, ...], path: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(path, f"must be a mapping, got {type(data).__name__}")
        for key in data:
            if key not in allowed:
                raise self.fail(path, f"unknown key {key!r} (allowed: {', '.join(allowed)})")
        return data


def parse_duration_ns(value: Any, what: str = "duration") -> int:
    """`90s`, `30m`, `250ms`, `2h`, `1h30m` → nanoseconds (ValueError otherwise, for `_field` to place)."""
    if not isinstance(value, str) or not is_duration(value):
        raise ValueError(f"{what} must look like 30s, 10m, 250ms, 2h or 1h30m, got {value!r}")
    return timefmt.parse_duration_ns(value, what)


def parse_rate_per_s(value: Any) -> float:
    """`2/s`, `30/min`, `100/h` → requests per second."""
    match = _RATE.match(str(value).strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"rate must look like 2/s, 30/min or 100/h, got {value!r}")
    return float(match[1]) * _RATE_PER_S[match[2]]


def _parse_start_ns(value: Any) -> int:
    if isinstance(value, dt.datetime):  # YAML reads an unquoted timestamp as a datetime
        moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return int(moment.timestamp()) * NS + moment.microsecond * 1000
    try:
        if isinstance(value, str):
            return timefmt.parse_rfc3339_ns(value, assume_utc=True)
    except InputError:
        pass
    raise ValueError(f"start must be an RFC 3339 time such as {DEFAULT_START}, got {value!r}")


def _weights(value: Any, cast: type, allowed: tuple[str, ...] | None, where: _Where, path: str) -> dict[Any, float]:
    if not isinstance(value, dict) or not value:
        raise where.fail(path, "must be a non-empty mapping of value: weight")
    result: dict[Any, float] = {}
    for key, weight in value.items():
        try:
            item = cast(key)
        except (TypeError, ValueError):
            raise where.fail(path, f"{key!r} is not a valid {cast.__name__}") from None
        if allowed is not None and item not in allowed:
            raise where.fail(path, f"unknown value {key!r} (allowed: {', '.join(allowed)})")
        if cast is int and not 32 <= item <= 4096:
            raise where.fail(path, f"input size {item} is outside 32..4096")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise where.fail(path, f"weight of {key!r} must be a non-negative number")
        result[item] = float(weight)
    total = sum(result.values())
    if total <= 0:
        raise where.fail(path, "weights must not all be zero")
    return {k: w / total for k, w in result.items()}


def _field(where: _Where, path: str, parse: Callable[[Any], Any], value: Any) -> Any:
    try:
        return parse(value)
    except ValueError as exc:
        raise where.fail(path, str(exc)) from None


def parse_scenario(data: Any, source: str = "<memory>", *, stem: str | None = None) -> Scenario:
    """Validate a scenario mapping; every problem is an InputError naming `source` and the key."""
    where = _Where(source)
    data = where.keys(data, _TOP_KEYS, "top level")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise where.fail("name", "must be a file-name-like string")
    if stem is not None and name != stem:
        raise where.fail("name", f"must equal the file's stem {stem!r}, got {name!r}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise where.fail("seed", "must be an integer")
    start_ns = _field(where, "start", _parse_start_ns, data.get("start", DEFAULT_START))
    if "duration" not in data:
        raise where.fail("duration", "is required")
    duration_ns = _field(where, "duration", parse_duration_ns, data["duration"])
    scrape_ns = _field(where, "scrape_interval", parse_duration_ns, data.get("scrape_interval", "15s"))
    if duration_ns <= 0 or scrape_ns <= 0:
        raise where.fail("duration", "duration and scrape_interval must be positive")
    if "fleet" not in data or not isinstance(data["fleet"], list):
        raise where.fail("fleet", "is required: a list of {host, gpus, model}")
    try:
        fleet = normalize_fleet(data["fleet"])
    except InputError as exc:
        raise where.fail("fleet", str(exc)) from None
    workload = _workload(where, data.get("workload", {}))
    faults_data = data.get("faults") or []
    if not isinstance(faults_data, list):
        raise where.fail("faults", "must be a list")
    gpus = {f"{e['host']}/{i}": e["model"] for e in fleet for i in range(e["gpus"])}
    faults = tuple(_fault(where, item, f"faults[{i}]", gpus, duration_ns) for i, item in enumerate(faults_data))
    truth = _truth(where, data.get("truth"), gpus) if "truth" in data else None
    return Scenario(name, seed, start_ns, duration_ns, scrape_ns, fleet, workload, faults, truth, source, dict(data))


def _workload(where: _Where, data: Any) -> Workload:
    data = where.keys(data or {}, _WORKLOAD_KEYS, "workload")
    return Workload(
        rate_per_s=_field(where, "workload.rate", parse_rate_per_s, data.get("rate", "1/s")),
        input_size=_weights(data.get("input_size", {512: 1}), int, None, where, "workload.input_size"),
        task_type=_weights(data.get("task_type", {"person": 1}), str, None, where, "workload.task_type"),
        model=_weights(data.get("model", {"ddcolor_paper_tiny": 1}), str, MODELS, where, "workload.model"),
        timeout_ns=_field(where, "workload.timeout", parse_duration_ns, data.get("timeout", "30s")),
    )


def _fault(where: _Where, data: Any, path: str, gpus: dict[str, str], duration_ns: int) -> Fault:
    if not isinstance(data, dict):
        raise where.fail(path, "must be a mapping")
    kind = data.get("kind")
    if kind not in FAULT_KINDS:
        raise where.fail(f"{path}.kind", f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
    where.keys(data, _FAULT_COMMON + _FAULT_EXTRA.get(kind, ()), path)
    start_ns = _field(where, f"{path}.start", parse_duration_ns, data.get("start", "0s"))
    end_ns = _field(where, f"{path}.end", parse_duration_ns, data["end"]) if "end" in data else None
    if end_ns is not None and end_ns <= start_ns:
        raise where.fail(f"{path}.end", "must be after start")
    if start_ns >= duration_ns:
        raise where.fail(f"{path}.start", "is after the scenario's end")
    severity = data.get("severity", 0.5)
    if not isinstance(severity, (int, float)) or isinstance(severity, bool) or not 0 <= severity <= 1:
        raise where.fail(f"{path}.severity", f"must be a number in 0..1, got {severity!r}")
    gpu = data.get("gpu")
    if gpu is not None and (not isinstance(gpu, str) or gpu not in gpus):
        raise where.fail(f"{path}.gpu", f"no GPU {gpu!r} in the fleet (write HOST/INDEX, known: {', '.join(gpus)})")
    if kind in _NEEDS_GPU and gpu is None:
        raise where.fail(f"{path}.gpu", f"a {kind} fault needs gpu: HOST/INDEX")
    if kind == "ecc_uncorrectable" and gpu is not None and not get_profile(gpus[gpu]).ecc:
        raise where.fail(f"{path}.gpu", f"{gpu} is a {gpus[gpu]}, which has no ECC memory")
    extra: dict[str, Any] = {}
    if kind == "traffic_shift":
        if "rate" in data:
            extra["rate_per_s"] = _field(where, f"{path}.rate", parse_rate_per_s, data["rate"])
        if "input_size" in data:
            extra["input_size"] = _weights(data["input_size"], int, None, where, f"{path}.input_size")
        if "task_type" in data:
            extra["task_type"] = _weights(data["task_type"], str, None, where, f"{path}.task_type")
        if "model" in data:
            extra["model"] = _weights(data["model"], str, MODELS, where, f"{path}.model")
    elif kind == "xid":
        code = data.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or not 1 <= code <= 255:
            raise where.fail(f"{path}.code", "an xid fault needs code: an XID number")
        extra["code"] = code
    elif kind == "memory_leak" and "version" in data:
        version = data["version"]
        if not isinstance(version, str) or not version.strip():
            raise where.fail(f"{path}.version", f"must be a version string, got {version!r}")
        extra["version"] = version
    elif kind == "app_bug" and "model" in data:
        if data["model"] not in MODELS:
            raise where.fail(f"{path}.model", f"unknown model {data['model']!r} (known: {', '.join(MODELS)})")
        extra["model"] = data["model"]
    return Fault(kind, start_ns, end_ns, gpu, float(severity), **extra)


def _truth(where: _Where, data: Any, gpus: dict[str, str]) -> dict[str, Any]:
    data = where.keys(data, ("cause", "drivers", "also"), "truth")

    def one(item: Any, path: str, allow_null: bool) -> dict[str, Any]:
        item = where.keys(item, ("cause", "drivers"), path)
        cause = item.get("cause")
        if cause is None and not allow_null:
            raise where.fail(f"{path}.cause", "is required")
        if cause is not None and cause not in CAUSE_IDS:
            raise where.fail(f"{path}.cause", f"unknown cause {cause!r} (known: {', '.join(CAUSE_IDS)})")
        drivers = item.get("drivers") or {}
        if not isinstance(drivers, dict):
            raise where.fail(f"{path}.drivers", "must be a mapping of attribute: value")
        return {"cause": cause, "drivers": dict(drivers)}

    truth = one({k: v for k, v in data.items() if k != "also"}, "truth", allow_null=True)
    also = data.get("also") or []
    if not isinstance(also, list):
        raise where.fail("truth.also", "must be a list")
    truth["also"] = [one(item, f"truth.also[{i}]", allow_null=False) for i, item in enumerate(also)]
    return truth


def load_scenario(ref: str | Path) -> Scenario:
    """A shipped scenario by name, or a YAML file by path."""
    text_ref = str(ref)
    path = Path(text_ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read scenario {text_ref}: {exc.strerror or exc}") from exc
        return _parse_text(text, text_ref, path.stem)
    shipped = resources.files("gpu_rca.scenarios") / f"{text_ref}.yaml"
    if not shipped.is_file():
        names = shipped_scenarios()
        nearest = nearest_scenario(text_ref, names)
        hint = f"; did you mean {nearest!r}?" if nearest else ""
        raise UsageError(
            f"no scenario named {text_ref!r}{hint} (`gpu-rca lab list` shows the {len(names)} shipped ones;"
            " or give a YAML file path)"
        )
    return _parse_text(shipped.read_text(encoding="utf-8"), f"{text_ref}.yaml", text_ref)


def _parse_text(text: str, source: str, stem: str) -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"scenario {source}: not valid YAML: {exc}") from exc
    return parse_scenario(data, source, stem=stem)


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in the `scenarios` package, sorted."""
    return sorted(p.name[:-5] for p in resources.files("gpu_rca.scenarios").iterdir() if p.name.endswith(".yaml"))


def nearest_scenario(text: str, names: list[str]) -> str | None:
    """The shipped name closest to `text`: the shortest name it is part of, else difflib's closest match
    (None when nothing is close)."""
    if not names:
        return None
    wanted = text.strip().lower()
    containing = [n for n in names if wanted and wanted in n]
    if containing:
        return min(containing, key=lambda n: (len(n), n))
    close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.5)
    return close[0] if close else None


def describe_scenario(name: str) -> str:
    """One line about a shipped scenario: the YAML's leading comment, else its fleet and faults."""
    text = (resources.files("gpu_rca.scenarios") / f"{name}.yaml").read_text(encoding="utf-8")
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    if any(comment):
        return " ".join(part for part in comment if part)
    scenario = _parse_text(text, f"{name}.yaml", name)
    models: dict[str, int] = {}
    for host in scenario.fleet:
        count = host.get("gpus", 1)
        models[str(host.get("model"))] = models.get(str(host.get("model")), 0) + (
            count if isinstance(count, int) else len(count)
        )
    fleet = ", ".join(f"{n}× {model}" for model, n in models.items())
    faults = ", ".join(sorted({f.kind for f in scenario.faults})) or "none"
    return f"{fleet} on {len(scenario.fleet)} host(s); faults: {faults}"


__all__ = [
    "EXPECTED_ERROR_TYPES",
    "FAULT_KINDS",
    "MODELS",
    "Fault",
    "Scenario",
    "Workload",
    "describe_scenario",
    "load_scenario",
    "nearest_scenario",
    "parse_duration_ns",
    "parse_rate_per_s",
    "parse_scenario",
    "shipped_scenarios",
]
