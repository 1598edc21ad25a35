"""The monitoring profile: Prometheus and Grafana with the bot's dashboard.

- Every query of the dashboard names a metric the bot really exports, read from a live
  ``BotMetrics()`` of the bake (botnodes/telegram/metrics.py), with labels it really has; and
  the dashboard shows what an operator asks first (updates and latency, replies and 429s, Redis
  errors, timers and lateness, broadcast progress), per replica.
- The compose profile: pinned images, provisioning mounted where Grafana reads it, Prometheus
  scraping the port the bot serves /metrics on; `podman-compose --profile monitoring config`
  accepts it. The profile is not brought up here: the compose tier builds its images from
  Debian packages (tests/container_images/build.sh), and Debian has no Grafana; see the README.
- monitoring=no leaves all of it out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from .baking import BakedProject, output_tail
from .test_shipping import load_yaml, tool

METRIC = re.compile(r"\b(bot_[a-z_]+|up)\b(?:\{([^}]*)\})?")
# Labels Prometheus adds (instance, job) or a histogram's series carry (le).
SCRAPE_LABELS = {"instance", "job", "le"}
EXPORTED_SCRIPT = """
import json
from prometheus_client import Counter, Gauge, Histogram
from botnodes.telegram.metrics import BotMetrics
suffixes = {Counter: ["_total", "_created"], Gauge: [""],
            Histogram: ["_bucket", "_count", "_sum", "_created"]}
names = {}
for metric in vars(BotMetrics()).values():
    for kind, ends in suffixes.items():
        if isinstance(metric, kind):
            for end in ends:
                names[metric._name + end] = list(metric._labelnames)
print(json.dumps(names))
"""


@pytest.fixture(scope="module")
def monitored(baked: Callable[..., BakedProject]) -> BakedProject:
    project = baked(monitoring="yes")
    assert project.has_dir("monitoring")
    return project


@pytest.fixture(scope="module")
def exported(monitored: BakedProject) -> dict[str, list[str]]:
    """Series name -> label names, of every metric the bake's BotMetrics registers."""
    result = monitored.run(
        tool("python"), "-c", EXPORTED_SCRIPT, env={"PYTHONPATH": str(monitored.path)}
    )
    assert result.returncode == 0, output_tail(result)
    names: dict[str, list[str]] = json.loads(result.stdout)
    assert "bot_updates_total" in names
    return names


def dashboard_queries(project: BakedProject) -> list[str]:
    dashboard = json.loads(project.read("monitoring/grafana/dashboards/bot.json"))
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert queries
    return queries


def test_every_dashboard_query_names_an_exported_metric_and_its_labels(
    monitored: BakedProject, exported: dict[str, list[str]]
) -> None:
    for query in dashboard_queries(monitored):
        found = METRIC.findall(query)
        assert found, f"no metric in {query!r}"
        for name, selector in found:
            if name == "up":
                continue
            assert name in exported, f"{query!r}: the bot exports no {name}"
            known = set(exported[name]) | SCRAPE_LABELS
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert label in known, f"{query!r}: {name} has no label {label!r}"
        for grouping in re.findall(r"by \(([^)]*)\)", query):
            for label in (part.strip() for part in grouping.split(",")):
                metric = METRIC.findall(query)[0][0]
                assert label in set(exported.get(metric, [])) | SCRAPE_LABELS, (query, label)


def test_dashboard_shows_what_an_operator_asks_first_per_replica(monitored: BakedProject) -> None:
    queries = dashboard_queries(monitored)
    text = "\n".join(queries)
    for metric in (
        "bot_updates_total",  # updates per second
        "bot_route_seconds_bucket",  # their latency
        "bot_telegram_retries_total",  # 429s
        "bot_redis_errors_total",
        "bot_timers_total",  # timers due (fired)
        "bot_timer_lateness_seconds_bucket",
        "bot_broadcast_messages_total",  # broadcast progress
    ):
        assert metric in text, metric
    assert 'reason="429"' in text
    for query in queries:
        if not query.startswith("up"):
            assert "by (instance" in query, f"not per replica: {query!r}"
    dashboard = json.loads(monitored.read("monitoring/grafana/dashboards/bot.json"))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"


def test_compose_profile_is_pinned_provisioned_and_scrapes_the_bot(
    monitored: BakedProject,
) -> None:
    compose: dict[str, Any] = load_yaml(monitored.read("docker-compose.yml"))
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{image}: pin an exact version"
    assert "profiles" not in services["bot"]
    assert "profiles" not in services["redis"]
    # Grafana on this machine only; Prometheus not published at all.
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    assert "ports" not in services["prometheus"]

    port = services["bot"]["environment"]["METRICS_PORT"]
    prometheus = load_yaml(monitored.read("monitoring/prometheus.yml"))
    (scrape,) = prometheus["scrape_configs"]
    (sd,) = scrape["dns_sd_configs"]
    assert sd["names"] == ["bot"]
    assert str(sd["port"]) == port
    webhook = load_yaml(monitored.read("docker-compose.webhook.yml"))
    assert webhook["services"]["bot"]["environment"]["WEBHOOK_PORT"] == port

    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = load_yaml(
        monitored.read("monitoring/grafana/provisioning/datasources/prometheus.yml")
    )
    (source,) = datasource["datasources"]
    assert source["uid"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    provider = load_yaml(monitored.read("monitoring/grafana/provisioning/dashboards/bot.yml"))
    (dashboards,) = provider["providers"]
    assert mounts["./monitoring/grafana/dashboards"] == dashboards["options"]["path"]


def test_podman_compose_accepts_the_profile(monitored: BakedProject) -> None:
    result = monitored.run(tool("podman-compose"), "--profile", "monitoring", "config")
    assert result.returncode == 0, output_tail(result)
    assert "grafana/grafana:" in result.stdout
    assert "prom/prometheus:" in result.stdout


def test_monitoring_no_leaves_it_all_out(baked: Callable[..., BakedProject]) -> None:
    project = baked(monitoring="no")
    assert not project.has_dir("monitoring")
    compose = load_yaml(project.read("docker-compose.yml"))
    assert set(compose["services"]) == {"redis", "bot"}
    assert set(compose["volumes"]) == {"redis-data"}
    assert "METRICS_PORT" not in compose["services"]["bot"]["environment"]
    assert "GRAFANA" not in project.read(".env.example")
    assert "monitoring" not in project.read("docker-compose.yml")
