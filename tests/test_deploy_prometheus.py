"""deploy/prometheus, deploy/alertmanager and deploy/dcgm-exporter checked by their own tools and by the contracts.

`promtool check config|rules`, `promtool test rules` and `amtool check-config` are the real Debian
binaries (Prometheus 2.42, Alertmanager 0.25).
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gpu_rca.schemas import metrics as m
from tests.support import REPO, data_file, require_binary, shared_sample

pytestmark = pytest.mark.prometheus

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
COUNTERS_CSV = REPO / "deploy" / "dcgm-exporter" / "counters.csv"
COMPOSE = REPO / "docker-compose.yml"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _alerts() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _container_layout(tmp_path: Path) -> Path:
    """deploy/prometheus laid out as compose mounts it in the Prometheus container, token volume included."""
    root = tmp_path / "etc-prometheus"
    root.mkdir()
    shutil.copy(PROMETHEUS_DIR / "prometheus.yml", root / "prometheus.yml")
    shutil.copytree(PROMETHEUS_DIR / "rules", root / "rules")
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    (secrets_mount,) = [v.split(":")[1] for v in mounts if v.startswith("gpu-rca-secrets:")]
    secrets = root / Path(secrets_mount).relative_to("/etc/prometheus")
    secrets.mkdir(parents=True)
    (secrets / "gpu-rca-token").write_text("gpurca_test\n")
    return root / "prometheus.yml"


def test_promtool_check_config_with_the_compose_mounts(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    result = _run(promtool, "check", "config", str(_container_layout(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = _run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(test_file: Path) -> None:
    promtool = require_binary("promtool")
    result = _run(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_promtool_test_that_sees_it_fire() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            fired |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {rule["alert"] for rule in _alerts()} - fired == set()


def test_the_deploy_doc_explains_every_alert_with_its_severity() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    section = doc.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    rows = {
        match[1]: (match[2].strip(), match[3].strip())
        for match in re.finditer(r"^\| `(\w+)` \|(.+)\|(.+)\|$", section, flags=re.MULTILINE)
    }
    alerts = {rule["alert"]: rule["labels"]["severity"] for rule in _alerts()}
    assert rows.keys() == alerts.keys()
    for name, (meaning, severity) in rows.items():
        assert severity == alerts[name] and meaning, name


def test_host_label_spellings_are_both_tested_and_templated() -> None:
    series = " ".join(
        s["series"]
        for path in RULE_TESTS
        for case in yaml.safe_load(path.read_text())["tests"]
        for s in case["input_series"]
    )
    assert 'Hostname="' in series and 'hostname="' in series
    for rule in _alerts():
        text = " ".join(rule["annotations"].values())
        if "$labels.Hostname" in text or "$labels.hostname" in text:
            assert text.count("$labels.Hostname") == text.count("$labels.hostname"), rule["alert"]


def test_memory_alerts_keep_the_article_thresholds_and_show_a_percentage() -> None:
    alerts = {rule["alert"]: rule for rule in _alerts()}
    for name, threshold, hold, severity in (
        ("GPUMemoryUsageHigh", "0.85", "2m", "warning"),
        ("GPUMemoryUsageCritical", "0.95", "1m", "critical"),
    ):
        rule = alerts[name]
        assert re.sub(r"\s+", " ", rule["expr"]).strip() == (f"{m.FB_USED} / ({m.FB_USED} + {m.FB_FREE}) > {threshold}")
        assert (rule["for"], rule["labels"]["severity"]) == (hold, severity)
        assert "$value | humanizePercentage" in rule["annotations"]["description"]


def test_rules_read_only_metrics_the_exporters_serve() -> None:
    known = set(m.METRICS_BY_NAME) | set(m.ALIASES_BY_NAME) | {"up", "ALERTS"}
    used = {name for rule in _alerts() for name in re.findall(r"\b(DCGM_\w+|up)\b", rule["expr"])}
    assert used - known == set()


def test_amtool_check_config() -> None:
    amtool = require_binary("amtool")
    result = _run(amtool, "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        # GPU alerts reach gpu-rca's webhook (and the chat placeholder).
        (["alertname=GPUMemoryUsageCritical", "severity=critical", "UUID=GPU-0a0a"], "chat,gpu-rca"),
        (["alertname=GPUThermalThrottling", "severity=warning", "UUID=GPU-0a0a"], "chat,gpu-rca"),
        # A gpu-rca that is down cannot take its own alert.
        (["alertname=GpuRcaDown", "severity=critical"], "chat"),
    ],
)
def test_alertmanager_routes(labels: list[str], receivers: str) -> None:
    amtool = require_binary("amtool")
    result = _run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_alertmanager_webhook_targets_gpu_rca_serve_with_the_token_file() -> None:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    assert config["route"]["group_by"] == [m.LABEL_UUID]
    (receiver,) = [r for r in config["receivers"] if r["name"] == "gpu-rca"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "http://gpu-rca:4318/alertmanager"
    token_path = webhook["http_config"]["authorization"]["credentials_file"]
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = compose["services"]["alertmanager"]["volumes"]
    assert f"gpu-rca-secrets:{Path(token_path).parent}:ro" in mounts


def _counters(path: Path) -> dict[str, str]:
    """Enabled counters of a dcgm-exporter CSV: field name -> Prometheus type."""
    rows = csv.reader(
        line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    return {row[0].strip(): row[1].strip() for row in rows}


def test_counters_csv_is_dcgm_exporter_format() -> None:
    for line in COUNTERS_CSV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            field, kind, help_text = (part.strip() for part in line.split(",", 2))
            assert re.fullmatch(r"DCGM_FI_[A-Z0-9_]+", field), line
            assert kind in {"gauge", "counter", "label"}, line
            assert help_text, line


def test_counters_csv_enables_every_metric_gpu_rca_reads_with_its_type() -> None:
    counters = _counters(COUNTERS_CSV)
    assert {metric.name: metric.type for metric in m.METRICS} == {
        name: counters.get(name) for name in m.METRICS_BY_NAME
    }


def test_counters_csv_keeps_dcgm_exporter_defaults() -> None:
    defaults = _counters(data_file("dcgm-exporter-default-counters.csv"))
    assert len(defaults) > 20  # the commented-out fields are not defaults
    ours = _counters(COUNTERS_CSV)
    assert {name: ours.get(name) for name in defaults} == defaults


def test_counters_csv_keeps_the_verbatim_dcgm_exporter_defaults() -> None:
    """Extra: the same check against dcgm-exporter's own file, where the shared samples are beside the checkout."""
    defaults = _counters(shared_sample("dcgm-exporter-default-counters.csv"))
    ours = _counters(COUNTERS_CSV)
    assert {name: ours.get(name) for name in defaults} == defaults
