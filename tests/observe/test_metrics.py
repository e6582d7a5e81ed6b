"""Metrics, read back through Prometheus' own parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kproxy.auth.events import AuthenticationEvents
from kproxy.observe.metrics import MAX_OPERATOR_LABEL_VALUES, Metrics
from tests.observe.records import allowed_record, unauthenticated_record


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_requests_are_counted_by_verb_code_and_university() -> None:
    metrics = Metrics(universities=["alpha", "beta"])

    metrics.observe(allowed_record())
    metrics.observe(allowed_record())
    metrics.observe(unauthenticated_record())

    assert (
        value(
            metrics,
            "kproxy_requests_total",
            verb="create",
            code="201",
            university="alpha",
        )
        == 2
    )
    assert (
        value(
            metrics, "kproxy_requests_total", verb="get", code="401", university="none"
        )
        == 1
    )


def test_latency_lands_in_the_histogram_in_seconds() -> None:
    metrics = Metrics()

    metrics.observe(allowed_record(latency=0.0125))

    name = "kproxy_request_duration_seconds"
    assert value(metrics, f"{name}_bucket", verb="create", le="0.005") == 0
    assert value(metrics, f"{name}_bucket", verb="create", le="0.025") == 1
    assert value(metrics, f"{name}_sum", verb="create") == pytest.approx(0.0125)
    assert value(metrics, f"{name}_count", verb="create") == 1


@pytest.mark.parametrize(
    ("field", "value_given", "label", "expected"),
    [
        pytest.param("method", "BREW", "verb", "other", id="unknown-method"),
        pytest.param("status", 999, "code", "other", id="impossible-status"),
    ],
)
def test_client_chosen_values_never_become_labels(
    field: str, value_given: object, label: str, expected: str
) -> None:
    metrics = Metrics(universities=["alpha"])

    metrics.observe(unauthenticated_record(**{field: value_given}))

    (labels,) = [
        dict(key[1]) for key in samples(metrics) if key[0] == "kproxy_requests_total"
    ]
    assert labels[label] == expected


def test_a_university_that_is_not_configured_counts_as_none() -> None:
    metrics = Metrics(universities=["alpha"])
    metrics.set_universities(["beta"])

    metrics.observe(allowed_record())

    assert (
        value(
            metrics,
            "kproxy_requests_total",
            verb="create",
            code="201",
            university="none",
        )
        == 1
    )


def test_authentication_events_are_counted() -> None:
    metrics = Metrics()
    events: AuthenticationEvents = metrics

    events.token_cache(hit=True)
    events.token_cache(hit=False)
    events.token_cache(hit=False)
    events.authentication_failed("expired")
    events.authentication_failed("a reason nobody defined")
    events.key_fetch("https://idp.alpha.edu", ok=True)
    events.key_fetch("https://idp.alpha.edu", ok=False)

    assert value(metrics, "kproxy_token_cache_requests_total", result="hit") == 1
    assert value(metrics, "kproxy_token_cache_requests_total", result="miss") == 2
    assert value(metrics, "kproxy_authentication_failures_total", reason="expired") == 1
    assert value(metrics, "kproxy_authentication_failures_total", reason="other") == 1
    issuer = "https://idp.alpha.edu"
    assert value(metrics, "kproxy_key_fetches_total", issuer=issuer) == 2
    assert value(metrics, "kproxy_key_fetch_errors_total", issuer=issuer) == 1


def test_policy_and_grant_events_are_counted() -> None:
    metrics = Metrics(universities=["alpha"])

    metrics.policy_reload("alpha", ok=True)
    metrics.policy_reload("gamma", ok=False)
    metrics.grants_synced(ok=True)
    metrics.grants_synced(ok=False)

    reloads = "kproxy_policy_reloads_total"
    assert value(metrics, reloads, university="alpha", result="success") == 1
    assert value(metrics, reloads, university="gamma", result="failure") == 1
    assert value(metrics, "kproxy_grant_syncs_total", result="success") == 1
    assert value(metrics, "kproxy_grant_syncs_total", result="failure") == 1


def test_open_streams_go_up_and_down() -> None:
    metrics = Metrics()

    metrics.watch_opened()
    metrics.watch_opened()
    metrics.watch_closed()
    metrics.tunnel_opened()
    metrics.tunnel_closed()

    assert value(metrics, "kproxy_open_watches") == 1
    assert value(metrics, "kproxy_open_tunnels") == 0


def test_operator_values_are_bounded() -> None:
    metrics = Metrics()

    for n in range(MAX_OPERATOR_LABEL_VALUES + 5):
        metrics.upstream_error(f"kind-{n}")

    kinds = {
        dict(key[1])["kind"]
        for key in samples(metrics)
        if key[0] == "kproxy_upstream_errors_total"
    }
    assert len(kinds) == MAX_OPERATOR_LABEL_VALUES + 1
    assert value(metrics, "kproxy_upstream_errors_total", kind="other") == 5
    assert value(metrics, "kproxy_upstream_errors_total", kind="kind-0") == 1


def test_key_ages_are_read_at_scrape_time_and_missing_keys_are_infinite() -> None:
    ages: dict[str, float | None] = {"https://a": 12.5}
    metrics = Metrics()
    metrics.set_key_age_source(lambda: ages)

    assert value(metrics, "kproxy_keys_age_seconds", issuer="https://a") == 12.5
    ages["https://a"] = 30.0
    ages["https://b"] = None

    assert value(metrics, "kproxy_keys_age_seconds", issuer="https://a") == 30.0
    assert value(metrics, "kproxy_keys_age_seconds", issuer="https://b") == math.inf


def test_a_failing_source_does_not_break_the_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> dict[str, float | None]:
        raise RuntimeError("bug")

    metrics = Metrics(key_ages=broken, certificate_expiry=lambda: 1_900_000_000.0)
    metrics.watch_opened()

    assert value(metrics, "kproxy_open_watches") == 1
    assert (
        value(metrics, "kproxy_serving_certificate_expiry_timestamp_seconds")
        == 1_900_000_000.0
    )
    assert "a metrics source failed" in caplog.text


def test_each_instance_counts_on_its_own() -> None:
    first, second = Metrics(), Metrics()

    first.grants_synced(ok=True)

    assert value(first, "kproxy_grant_syncs_total", result="success") == 1
    assert value(second, "kproxy_grant_syncs_total", result="success") is None


def test_audit_drops_and_build_info_are_exposed() -> None:
    metrics = Metrics()

    metrics.audit_dropped()

    assert value(metrics, "kproxy_audit_events_dropped_total") == 1
    build = [key for key in samples(metrics) if key[0] == "kproxy_build_info"]
    assert len(build) == 1
