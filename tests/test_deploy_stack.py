"""Static checks of the stack no engine runs here: otel-collector.yaml, docker-compose.yml, Tempo, Grafana, Dockerfile.

The OTel Collector, Tempo, Loki and Grafana only run under docker compose, so these tests check
what can go wrong without running them: component names valid for the pinned collector version,
pipelines that reference only defined components and use every one, endpoints that point at a
compose service listening on that port, mounted files that exist, pinned images, datasources the
dashboards need.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gpu_rca.schemas import attributes as a
from gpu_rca.schemas import metrics as m
from tests.support import REPO

COLLECTOR_YAML = REPO / "otel-collector.yaml"
COMPOSE_YML = REPO / "docker-compose.yml"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
TEMPO_YAML = REPO / "deploy" / "tempo" / "tempo.yaml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DATASOURCES_YAML = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS_YAML = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml"

#: The collector image the config is written for.
COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.159.0"
#: Component types of otelcol-contrib 0.159.0 this stack may use, by kind (from the upstream
#: metadata.yaml files: otlp_grpc/otlp_http since v0.144.0, span_metrics after contrib's
#: snake_case rename; the others unchanged).
VALID_COMPONENTS = {
    "receivers": {"otlp", "prometheus", "filelog", "hostmetrics"},
    "processors": {
        "memory_limiter",
        "batch",
        "tail_sampling",
        "filter",
        "transform",
        "attributes",
        "resource",
        "probabilistic_sampler",
    },
    "exporters": {"otlp_grpc", "otlp_http", "prometheus", "prometheusremotewrite", "debug", "file"},
    "connectors": {"span_metrics", "forward"},
    "extensions": {"health_check", "file_storage", "pprof", "zpages"},
}
#: Names that still load on 0.159.0 only as deprecated aliases, or not at all, and what replaces them.
OUTDATED_COMPONENTS = {
    ("exporters", "otlp"): "otlp_grpc (renamed in v0.144.0)",
    ("exporters", "otlphttp"): "otlp_http (renamed in v0.144.0)",
    ("connectors", "spanmetrics"): "span_metrics",
    ("exporters", "logging"): "debug (logging was removed in v0.111.0)",
    ("exporters", "loki"): "otlp_http to Loki's /otlp endpoint (loki exporter deprecated)",
}
#: Images with no shell or HTTP client inside, which Docker cannot healthcheck; probed from outside.
NO_HEALTHCHECK = {"otel-collector": "distroless", "tempo": "distroless", "init": "one-shot setup"}
#: Host ports the seed article uses, and gpu-rca serve's.
ARTICLE_PORTS = {
    "dcgm-exporter": "9400:9400",
    "prometheus": "9090:9090",
    "grafana": "3000:3000",
    "tempo": "3200:3200",
    "alertmanager": "9093:9093",
    "gpu-rca": "4320:4318",
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return _load(COLLECTOR_YAML)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE_YML)


def _kind(name: str) -> str:
    """`otlp_http/gpu-rca` -> `otlp_http`."""
    return name.split("/", 1)[0]


def _service_ports(service: dict[str, Any]) -> set[int]:
    """Ports a compose service listens on inside the network (its `expose` and published container ports)."""
    ports = {int(str(p)) for p in service.get("expose", [])}
    ports |= {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    return ports


def _assert_points_at_service(compose: dict[str, Any], where: str, host: str, port: int) -> None:
    services = compose["services"]
    assert host in services, f"{where}: {host} is not a compose service"
    assert port in _service_ports(services[host]), f"{where}: {host} does not listen on {port}"


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint if "://" in endpoint else f"tcp://{endpoint}")
    assert parts.hostname and parts.port, endpoint
    return parts.hostname, parts.port


# --- otel-collector.yaml ------------------------------------------------------------------------


def test_collector_component_names_are_valid_for_the_pinned_version(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert compose["services"]["otel-collector"]["image"] == COLLECTOR_IMAGE
    for kind, valid in VALID_COMPONENTS.items():
        for name in collector.get(kind, {}):
            assert (kind, _kind(name)) not in OUTDATED_COMPONENTS, (
                f"{kind}.{name}: use {OUTDATED_COMPONENTS[(kind, _kind(name))]}"
            )
            assert _kind(name) in valid, f"{kind}.{name} is not a {kind[:-1]} of {COLLECTOR_IMAGE}"


def test_collector_pipelines_use_every_component_and_only_defined_ones(collector: dict[str, Any]) -> None:
    pipelines = collector["service"]["pipelines"]
    connectors = set(collector.get("connectors", {}))
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in used:
            for component in pipeline.get(kind, []):
                defined = set(collector.get(kind, {})) | (connectors if kind != "processors" else set())
                assert component in defined, f"pipeline {name} uses undefined {kind[:-1]} {component}"
                used[kind].add(component)
    for kind, names in used.items():
        assert set(collector.get(kind, {})) == names - connectors, f"unused {kind}"
    # A connector joins two pipelines: it is an exporter in one and a receiver in another.
    for connector in connectors:
        assert connector in used["exporters"] and connector in used["receivers"], connector
    assert set(collector["service"]["extensions"]) == set(collector["extensions"])


def test_collector_memory_limiter_first_and_batch_last(collector: dict[str, Any]) -> None:
    for name, pipeline in collector["service"]["pipelines"].items():
        processors = [_kind(p) for p in pipeline["processors"]]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name


def _pipelines_exporting_to(collector: dict[str, Any], exporter: str) -> dict[str, dict[str, Any]]:
    return {name: p for name, p in collector["service"]["pipelines"].items() if exporter in p["exporters"]}


def test_collector_samples_tempo_traces_but_never_gpu_rca_spans(collector: dict[str, Any]) -> None:
    tempo = _pipelines_exporting_to(collector, "otlp_grpc/tempo")
    assert [name.split("/")[0] for name in tempo] == ["traces"]
    (tempo_pipeline,) = tempo.values()
    assert "tail_sampling" in tempo_pipeline["processors"]
    policies = {p["type"]: p for p in collector["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] > 0
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100

    gpu_rca = _pipelines_exporting_to(collector, "otlp_http/gpu-rca")
    assert sorted(name.split("/")[0] for name in gpu_rca) == ["logs", "traces"]
    for pipeline in gpu_rca.values():
        assert not any(_kind(p) in {"probabilistic_sampler", "filter"} for p in pipeline["processors"])


def test_collector_keeps_whole_traces_holding_an_inference_span_for_gpu_rca(collector: dict[str, Any]) -> None:
    # The trace is grouped before it is judged: tail_sampling buffers every span of a trace and keeps it
    # when any span carries the stamp; a per-span filter would drop the trace's preprocess/decode spans.
    gpu_rca = _pipelines_exporting_to(collector, "otlp_http/gpu-rca")
    (traces,) = [p for name, p in gpu_rca.items() if name.startswith("traces")]
    processors = traces["processors"]
    assert [_kind(p) for p in processors] == ["memory_limiter", "tail_sampling", "batch"]
    keeper = collector["processors"][processors[1]]
    (policy,) = keeper["policies"]  # one policy: every trace holding an inference span, nothing sampled
    assert policy["type"] == "ottl_condition"
    assert policy["ottl_condition"]["span"] == [f'attributes["{a.TELEMETRY_SOURCE}"] != nil']
    assert keeper["num_traces"] >= 50000 and keeper["decision_cache"]["sampled_cache_size"] > 0


def test_collector_logs_reach_loki_over_otlp(collector: dict[str, Any]) -> None:
    assert collector["exporters"]["otlp_http/loki"]["endpoint"] == "http://loki:3100/otlp"
    assert _pipelines_exporting_to(collector, "otlp_http/loki").keys() == {"logs"}


def test_collector_span_metrics_break_requests_down_by_task_type_and_input_size(collector: dict[str, Any]) -> None:
    span_metrics = collector["connectors"]["span_metrics"]
    dimensions = {d["name"] for d in span_metrics["dimensions"]}
    assert {a.DDCOLOR_TASK_TYPE, a.DDCOLOR_INPUT_SIZE, a.ERROR_TYPE, a.GPU_UUID} <= dimensions
    assert span_metrics["exemplars"]["enabled"] is True
    assert collector["exporters"]["prometheus"]["enable_open_metrics"] is True
    # Fed from inference spans alone, unsampled, so rates count every request and nothing else.
    (source,) = _pipelines_exporting_to(collector, "span_metrics").values()
    assert not any(_kind(p) in {"tail_sampling", "probabilistic_sampler"} for p in source["processors"])
    (span_filter,) = [p for p in source["processors"] if _kind(p) == "filter"]
    assert collector["processors"][span_filter]["traces"]["span"] == [f'attributes["{a.TELEMETRY_SOURCE}"] == nil']


def test_collector_queues_for_gpu_rca_persist_and_retry_without_deadline(collector: dict[str, Any]) -> None:
    exporter = collector["exporters"]["otlp_http/gpu-rca"]
    storage = exporter["sending_queue"]["storage"]
    assert _kind(storage) == "file_storage" and storage in collector["service"]["extensions"]
    assert exporter["retry_on_failure"]["max_elapsed_time"] in ("0s", 0)


def test_collector_endpoints_point_at_compose_services(collector: dict[str, Any], compose: dict[str, Any]) -> None:
    for name, exporter in collector["exporters"].items():
        if "endpoint" in exporter and not exporter["endpoint"].startswith("0.0.0.0"):
            _assert_points_at_service(compose, f"exporter {name}", *_host_port(exporter["endpoint"]))
    # What the collector listens on is published by its compose service.
    listened = [collector["extensions"]["health_check"]["endpoint"], collector["exporters"]["prometheus"]["endpoint"]]
    listened += [p["endpoint"] for p in collector["receivers"]["otlp"]["protocols"].values()]
    for endpoint in listened:
        host, port = _host_port(endpoint)
        assert host == "0.0.0.0", f"{endpoint}: other containers cannot reach a localhost listener"
        _assert_points_at_service(compose, endpoint, "otel-collector", port)


def _command_option(command: list[str], option: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{option}=")]
    return value


def test_collector_gpu_rca_endpoint_matches_serve_port_and_token(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    serve = compose["services"]["gpu-rca"]
    assert serve["command"][0] == "serve"
    port = int(_command_option(serve["command"], "--port"))
    exporter = collector["exporters"]["otlp_http/gpu-rca"]
    assert _host_port(exporter["endpoint"]) == ("gpu-rca", port)
    # The token the collector sends is the file serve reads, through the same volume.
    (token_file,) = re.findall(r"\$\{file:([^}]+)\}", exporter["headers"]["Authorization"])
    serve_token = _command_option(serve["command"], "--token-file")
    for service, path in (("otel-collector", token_file), ("gpu-rca", serve_token)):
        mounts = compose["services"][service]["volumes"]
        assert f"gpu-rca-secrets:{Path(path).parent}:ro" in mounts, service
        assert Path(path).name == "gpu-rca-token"


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and "$" not in tag, f"{name}: {image} is not pinned"
        if "build" in service:
            # Images compose builds carry the project's version: gpu-rca itself, the reference service.
            assert image in {f"gpu-rca:{version}", f"gpu-rca-ddcolor:{version}"}, name


def test_compose_mounts_exist_and_volumes_are_declared(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_compose_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert ("healthcheck" in service) != (name in NO_HEALTHCHECK), name
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"


def test_loki_healthcheck_probes_ready_with_the_busybox_its_image_has(compose: dict[str, Any]) -> None:
    loki = compose["services"]["loki"]
    repository, _, tag = loki["image"].partition(":")
    # grafana/loki 3.6.0 changed its base image and dropped busybox: no wget left to run.
    assert repository == "grafana/loki" and tuple(int(p) for p in tag.split(".")[:2]) < (3, 6), loki["image"]
    command, *probe = loki["healthcheck"]["test"]
    assert command == "CMD" and probe[0] == "wget" and "--spider" in probe
    parts = urlsplit(probe[-1])
    assert (parts.hostname, parts.path) == ("localhost", "/ready") and parts.port in _service_ports(loki)


def test_compose_publishes_the_article_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, mapping in ARTICLE_PORTS.items():
        assert mapping in services[name]["ports"], name
    assert {"4317:4317", "4318:4318"} <= set(services["otel-collector"]["ports"])


@pytest.mark.parametrize("profile", [None, "gpu", "simulate"])
def test_compose_host_ports_do_not_collide(compose: dict[str, Any], profile: str | None) -> None:
    published: dict[str, str] = {}
    for name, service in compose["services"].items():
        if service.get("profiles") and profile not in service["profiles"]:
            continue
        for mapping in service.get("ports", []):
            host_port = str(mapping).split(":")[0]
            assert host_port not in published, f"{name} and {published.get(host_port)} both publish {host_port}"
            published[host_port] = name


def test_compose_gpu_and_simulate_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    dcgm = services["dcgm-exporter"]
    assert dcgm["profiles"] == ["gpu"]
    (device,) = dcgm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # The counters CSV is mounted where the exporter's -f option reads it.
    (counters,) = [v for v in dcgm["volumes"] if v.startswith("./deploy/dcgm-exporter/counters.csv:")]
    assert counters.split(":")[1] == dcgm["command"][dcgm["command"].index("-f") + 1]

    simulator = services["gpu-sim"]
    assert simulator["profiles"] == ["simulate"]
    assert simulator["command"][0] == "exporter"
    assert "--port=9400" in simulator["command"]
    assert any(arg.startswith("--simulate=") for arg in simulator["command"])
    assert _host_port(_command_option(simulator["command"], "--otlp-endpoint")) == ("otel-collector", 4318)

    # The reference DDColor service, built from examples/, on the lab backend, exporting to the collector.
    ddcolor = services["ddcolor"]
    assert ddcolor["profiles"] == ["simulate"]
    assert ddcolor["build"]["dockerfile"] == "examples/ddcolor_service/Dockerfile"
    assert "--backend=lab" in ddcolor["command"]
    assert _host_port(_command_option(ddcolor["command"], "--otlp-endpoint")) == ("otel-collector", 4318)


def test_compose_simulate_command_matches_the_exporter_cli(compose: dict[str, Any]) -> None:
    from gpu_rca.cli import VERBS, cli

    if "exporter" not in VERBS:
        pytest.skip("`gpu-rca exporter` is not registered yet")
    import click

    command = cli.get_command(click.Context(cli), "exporter")
    options = {opt for param in command.params for opt in param.opts}
    used = {arg.split("=", 1)[0] for arg in compose["services"]["gpu-sim"]["command"][1:]}
    assert used <= options


def test_compose_default_scenario_is_shipped(compose: dict[str, Any]) -> None:
    shipped = {p.stem for p in (REPO / "scenarios").glob("*.yaml")}
    if not shipped:
        pytest.skip("no scenarios shipped yet")
    simulate = _command_option(compose["services"]["gpu-sim"]["command"], "--simulate")
    default = re.fullmatch(r"\$\{GPU_RCA_SCENARIO:-([\w.-]+)\}", simulate)
    assert default and default.group(1) in shipped


# --- Prometheus, Alertmanager and Tempo endpoints -----------------------------------------------


def test_prometheus_targets_are_compose_services(compose: dict[str, Any]) -> None:
    config = _load(PROMETHEUS_YML)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"dcgm", "gpu-rca-exporter", "gpu-rca", "otel-collector"} <= set(jobs)
    for name, job in jobs.items():
        targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        targets += [f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        for target in targets:
            host, port = _host_port(target)
            _assert_points_at_service(compose, f"job {name}", "prometheus" if host == "localhost" else host, port)
    for am in config["alerting"]["alertmanagers"]:
        for target in am["static_configs"][0]["targets"]:
            _assert_points_at_service(compose, "alerting", *_host_port(target))
    # gpu-rca serve's own metrics, with the token it requires.
    assert jobs["gpu-rca"]["static_configs"][0]["targets"] == ["gpu-rca:4318"]
    assert jobs["gpu-rca"]["authorization"]["credentials_file"] == "secrets/gpu-rca-token"


def test_alertmanager_webhook_points_at_gpu_rca_serve(compose: dict[str, Any]) -> None:
    for receiver in _load(ALERTMANAGER_YML)["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            _assert_points_at_service(compose, receiver["name"], *_host_port(webhook["url"]))
            assert urlsplit(webhook["url"]).path == "/alertmanager"


def test_tempo_config_is_tempo_3_single_binary(compose: dict[str, Any], collector: dict[str, Any]) -> None:
    tempo = _load(TEMPO_YAML)
    assert compose["services"]["tempo"]["image"] == "grafana/tempo:3.0.0"
    # Tempo 3 removed these blocks; a config holding them does not load.
    assert not {"ingester", "ingester_client", "compactor", "metrics_generator_client"} & set(tempo)
    assert tempo["storage"]["trace"]["backend"] == "local"
    assert tempo["server"]["http_listen_port"] == 3200
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert _host_port(grpc) == ("0.0.0.0", _host_port(collector["exporters"]["otlp_grpc/tempo"]["endpoint"])[1])
    for remote in tempo["metrics_generator"]["storage"]["remote_write"]:
        _assert_points_at_service(compose, "tempo remote_write", *_host_port(remote["url"]))
    assert "--web.enable-remote-write-receiver" in compose["services"]["prometheus"]["command"]
    for path in (tempo["storage"]["trace"]["wal"]["path"], tempo["storage"]["trace"]["local"]["path"]):
        assert Path(path).is_relative_to("/var/tempo")
    assert "tempo-data:/var/tempo" in compose["services"]["tempo"]["volumes"]


# --- Grafana ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    return {d["uid"]: d for d in _load(DATASOURCES_YAML)["datasources"]}


def test_grafana_datasources_point_at_compose_services(
    datasources: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    assert {d["type"] for d in datasources.values()} == {"prometheus", "tempo", "loki"}
    for uid, source in datasources.items():
        _assert_points_at_service(compose, f"datasource {uid}", *_host_port(source["url"]))


def test_grafana_links_between_datasources(datasources: dict[str, dict[str, Any]]) -> None:
    def linked_uids(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = {v for k, v in node.items() if k == "datasourceUid"}
            return found.union(*(linked_uids(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(linked_uids(v) for v in node))
        return set()

    for uid, source in datasources.items():
        assert linked_uids(source.get("jsonData", {})) <= set(datasources), uid
    prometheus, tempo = datasources["prometheus"]["jsonData"], datasources["tempo"]["jsonData"]
    assert prometheus["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"
    # Spans join GPU metrics on gpu.uuid = UUID, and logs on host.name.
    assert tempo["tracesToMetrics"]["tags"] == [{"key": a.GPU_UUID, "value": m.LABEL_UUID}]
    assert f'__span.tags["{a.HOST_NAME}"]' in tempo["tracesToLogsV2"]["query"]
    # Grafana 11 removed the Tempo datasource's Loki search tab (grafana/grafana#84346): its key is dead.
    assert "lokiSearch" not in tempo


def _dashboards() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in sorted((GRAFANA_DIR / "dashboards").glob("*.json"))]


def test_dashboard_datasources_are_provisioned(datasources: dict[str, dict[str, Any]]) -> None:
    dashboards = _dashboards()
    assert dashboards
    for path, dashboard in dashboards:
        refs = [v["datasource"] for v in dashboard["templating"]["list"]]
        for panel in dashboard["panels"]:
            refs += [panel["datasource"]] if "datasource" in panel else []
            refs += [t["datasource"] for t in panel.get("targets", [])]
        for ref in refs:
            assert ref["uid"] in datasources, f"{path.name}: datasource {ref['uid']} is not provisioned"
            assert ref["type"] == datasources[ref["uid"]]["type"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"


def test_dashboard_has_the_article_panels() -> None:
    ((_, dashboard),) = [d for d in _dashboards() if d[1]["uid"] == "gpu-rca-gpus"]
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in (
        m.FB_USED,
        m.FB_FREE,
        m.GPU_UTIL,
        m.GPU_TEMP,
        m.POWER_USAGE,
        m.SM_CLOCK,
        m.CLOCKS_EVENT_REASONS,
        m.XID_ERRORS,
        m.ECC_DBE_VOL_TOTAL,
    ):
        assert metric in exprs, metric
    # Request and failure rates by task type and input size, from the collector's span_metrics.
    for label in (a.DDCOLOR_TASK_TYPE, a.DDCOLOR_INPUT_SIZE, a.ERROR_TYPE):
        assert label.replace(".", "_") in exprs
    assert "traces_span_metrics_calls_total" in exprs


def test_grafana_provisioning_is_mounted_where_grafana_reads_it(compose: dict[str, Any]) -> None:
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = _load(DASHBOARD_PROVIDERS_YAML)["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = Path(compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (REPO / "deploy" / "grafana" / "dashboards" / home.relative_to(provider["options"]["path"])).is_file()


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r'pip install "\.\[all\]"', dockerfile)
    assert 'ENTRYPOINT ["gpu-rca"]' in dockerfile
    assert re.search(r"^FROM python:3\.11-slim-\w+$", dockerfile, re.M)


def test_dockerignore_keeps_what_the_install_needs() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    packages = setuptools.get("packages")
    if not isinstance(packages, list):  # `packages.find` with include patterns
        packages = [pattern.rstrip("*") for pattern in packages["find"]["include"]]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *packages}
    assert needed & ignored == set()
    for top in needed:
        assert (REPO / top).exists(), top
