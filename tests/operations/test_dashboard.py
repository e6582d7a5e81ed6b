"""The Grafana dashboard queries metrics kproxy really exports, by their real labels.

The names are checked against what ``Metrics`` renders once every kind of event has
been counted, parsed as Prometheus parses it, so a renamed metric or label fails
here rather than leaving an empty panel in production.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kproxy.observe.metrics import Metrics
from kproxy.observe.records import RequestRecord
from tests.operations.conftest import ROOT

DASHBOARD: Final = ROOT / "deploy" / "grafana" / "kproxy.json"
METRIC: Final = re.compile(r"\bkproxy_[a-z0-9_]+")
GROUPING: Final = re.compile(r"\bby \(([^)]*)\)")
MATCHER: Final = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
# Labels Prometheus adds at scrape time, and the histogram's own.
SCRAPE_LABELS: Final = frozenset({"job", "instance", "le"})


def expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads(Path(DASHBOARD).read_text())
    return [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ]


def exported() -> dict[str, set[str]]:
    """Every sample name the metrics render after each event, with its labels."""
    metrics = Metrics(universities=["alpha"])
    metrics.set_key_age_source(lambda: {"https://issuer.example": 12.0})
    metrics.set_certificate_expiry_source(lambda: 2.0e9)
    metrics.observe(
        RequestRecord(
            request_id="1",
            started_at=0.0,
            latency=0.01,
            client_address="127.0.0.1",
            method="GET",
            uri="/api/v1/pods",
            status=200,
            verb="list",
            university="alpha",
        )
    )
    metrics.authentication_failed("expired")
    metrics.token_cache(hit=True)
    metrics.key_fetch("https://issuer.example", ok=False)
    metrics.policy_reload("alpha", ok=True)
    metrics.grants_synced(ok=True)
    metrics.upstream_error("timeout")
    metrics.audit_dropped()
    metrics.watch_opened()
    metrics.tunnel_opened()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


@pytest.mark.parametrize("expression", expressions())
def test_every_queried_metric_and_label_exists(expression: str) -> None:
    available = exported()

    names = METRIC.findall(expression)
    assert names, expression
    for name in names:
        assert name in available, f"{name} is not exported"
    known = set().union(*(available[name] for name in names)) | SCRAPE_LABELS
    for group in GROUPING.findall(expression):
        assert {label.strip() for label in group.split(",")} <= known, expression
    for selector in re.findall(r"\{([^}]*)\}", expression):
        assert set(MATCHER.findall(selector)) <= known, expression


def test_the_dashboard_shows_every_metric_kproxy_exports() -> None:
    queried = {
        name for expression in expressions() for name in METRIC.findall(expression)
    }
    rendered = Metrics().render().decode()
    # prometheus_client's creation timestamps are bookkeeping, not something to plot.
    families = {
        family.name
        for family in text_string_to_metric_families(rendered)
        if not family.name.endswith("_created")
    }

    for family in families | {"kproxy_serving_certificate_expiry_timestamp_seconds"}:
        assert any(name.startswith(family) for name in queried), family
