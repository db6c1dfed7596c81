"""Helpers for tests that run a real Prometheus: ports, polling, test-sized rules and every PromQL expression we ship."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpu_rca.schemas.timefmt import parse_rfc3339_ns
from tests.support import REPO

RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
DASHBOARDS_DIR = REPO / "deploy" / "grafana" / "dashboards"
DATASOURCES = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
#: Grafana's built-in variables, replaced the way Grafana would for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
DEADLINE_S = 30.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> Any:
    """GET `url` and parse the JSON answer."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def poll(check: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Call `check` until it returns something truthy; fail with `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def unix_s(rfc3339: str) -> float:
    """Seconds since the epoch of Prometheus's RFC 3339 timestamps (nanosecond fractions, any offset)."""
    return parse_rfc3339_ns(rfc3339) / 1e9


def shortened_rules(tmp: Path) -> Path:
    """A copy of every rule file under `tmp/rules` with each `for:` cut to 1 s, so alerts fire within seconds."""
    out = tmp / "rules"
    out.mkdir()
    for path in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "1s"
        (out / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def prometheus_command(binary: str, tmp: Path, config: dict[str, Any], port: int) -> list[str]:
    """Write `config` (1 s scrape and evaluation unless it says otherwise) under `tmp`; the command serving it on `port`."""
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, **config}
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return [
        binary,
        f"--config.file={path}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]


def start_prometheus(binary: str, tmp: Path, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    """Run Prometheus with `config` on a free port: the process (stderr piped) and its URL."""
    port = free_port()
    process = subprocess.Popen(
        prometheus_command(binary, tmp, config, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return process, f"http://127.0.0.1:{port}"


def query(url: str, expr: str) -> dict[str, Any]:
    """GET /api/v1/query on the Prometheus at `url`; the whole response, including an error's `status`."""
    encoded = urllib.parse.urlencode({"query": expr})
    try:
        return get_json(f"{url}/api/v1/query?{encoded}")
    except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
        return json.load(exc)


def rule_expressions() -> list[tuple[str, str]]:
    """(alert or record name, expr) of every rule in deploy/prometheus/rules."""
    exprs = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                exprs.append((rule.get("alert") or rule["record"], rule["expr"]))
    return exprs


def dashboard_expressions() -> list[tuple[str, str]]:
    """(dashboard: panel refId, expr) of every dashboard query and variable, template variables filled in."""
    exprs = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        variables = {f"${v['name']}": v.get("allValue") or ".*" for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in sorted({**GRAFANA_VARIABLES, **variables}.items(), key=lambda kv: -len(kv[0])):
                    expr = expr.replace(name, value)
                exprs.append((f"{path.name}: {panel['title']} {target['refId']}", expr))
        for variable in dashboard["templating"]["list"]:
            query_text = variable["query"]["query"]
            # label_values(METRIC, LABEL) is Grafana's; Prometheus answers the series part.
            exprs.append(
                (f"{path.name}: variable {variable['name']}", query_text[len("label_values(") : query_text.rindex(",")])
            )
    return exprs


def datasource_expressions() -> list[tuple[str, str]]:
    """Tempo's traces-to-metrics queries, with `$__tags` as Grafana fills it from a span's gpu.uuid."""
    exprs = []
    for source in yaml.safe_load(DATASOURCES.read_text())["datasources"]:
        for item in source.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []):
            exprs.append((f"tracesToMetrics: {item['name']}", item["query"].replace("$$__tags", 'UUID="GPU-x"')))
    return exprs


def failing_expressions(url: str) -> tuple[int, dict[str, str]]:
    """Run every rule, dashboard and datasource expression against the Prometheus at `url`: (how many, failures)."""
    expressions = rule_expressions() + dashboard_expressions() + datasource_expressions()
    failures = {}
    for name, expr in expressions:
        if "$" in expr:
            failures[name] = f"unsubstituted variable in {expr!r}"
            continue
        result = query(url, expr)
        if result.get("status") != "success":
            failures[name] = f"{result.get('errorType')}: {result.get('error')}"
    return len(expressions), failures
