"""What a running kproxy tells its operator: probes, metrics, access log, audit trail.

One federation serves four kinds of request (allowed, refused, unauthenticated,
malformed) and a watch; each is then found exactly once in the audit file and the
access log, counted under the right labels in ``/metrics``, and no token it carried
appears in any log record, at any level, from any logger.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, Final

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from kproxy.observe.access import ACCESS_LOGGER_NAME
from kproxy.standins.federation import LocalFederation
from tests.operations.conftest import bearer, eventually, probe_text

ALLOWED: Final = "/api/v1/namespaces/alpha/configmaps"
REFUSED: Final = "/api/v1/namespaces/beta/configmaps"
MALFORMED: Final = "/api/v1/namespaces/alpha//configmaps"
WATCH: Final = "/api/v1/namespaces/alpha/configmaps?watch=true"


class Records(logging.Handler):
    """Every record any logger emits, kept raw: before any filter or formatter."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> Iterator[str]:
        """Each record's message, arguments, extra fields and traceback, as text."""
        for record in self.records:
            yield record.getMessage()
            yield json.dumps(vars(record), default=repr)
            if record.exc_info:
                yield logging.Formatter().formatException(record.exc_info)

    def access(self) -> list[dict[str, Any]]:
        return [
            vars(record) for record in self.records if record.name == ACCESS_LOGGER_NAME
        ]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def tampered(token: str) -> str:
    """The same header and claims under a signature that does not verify."""
    head, claims, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{claims}.{flipped}{signature[1:]}"


def metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples keyed by name and labels, parsed as Prometheus parses them."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    parsed: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


async def scrape(federation: LocalFederation) -> dict[Any, float]:
    status, text = await probe_text(federation.proxy.probe_addresses[0] + "/metrics")
    assert status == 200
    return metrics(text)


async def audit_events(federation: LocalFederation, count: int) -> list[dict[str, Any]]:
    path = federation.workdir / "audit.log"

    async def written() -> list[dict[str, Any]] | None:
        if not path.exists():
            return None
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines] if len(lines) >= count else None

    return await eventually(written, what=f"{count} audit lines in {path}")


async def get(
    client: aiohttp.ClientSession,
    federation: LocalFederation,
    path: str,
    token: str,
    agent: str,
) -> int:
    url = URL(federation.url + path, encoded=True)
    headers = {**bearer(token), "User-Agent": agent}
    async with client.get(url, headers=headers) as response:
        await response.read()
        return response.status


async def test_each_request_is_audited_logged_and_counted_once_without_its_token(
    federation: LocalFederation, client: aiohttp.ClientSession, records: Records
) -> None:
    token = federation.scheduler_token("alpha")
    forged = tampered(federation.scheduler_token("alpha"))
    before = await scrape(federation)

    statuses = {
        "allowed": await get(client, federation, ALLOWED, token, "agent-allowed"),
        "refused": await get(client, federation, REFUSED, token, "agent-refused"),
        "forged": await get(client, federation, ALLOWED, forged, "agent-forged"),
        "malformed": await get(client, federation, MALFORMED, token, "agent-malformed"),
    }

    assert statuses == {"allowed": 200, "refused": 403, "forged": 401, "malformed": 400}
    events = {event["userAgent"]: event for event in await audit_events(federation, 4)}
    assert len(events) == 4
    check_allowed_event(events["agent-allowed"], federation)
    check_refused_event(events["agent-refused"])
    check_unauthenticated_event(events["agent-forged"])
    check_malformed_event(events["agent-malformed"])
    check_access_lines(records.access(), events)
    check_counters(before, await scrape(federation))
    for text in records.texts():
        assert token not in text
        assert forged not in text
        assert forged.split(".")[2] not in text


def check_allowed_event(event: dict[str, Any], federation: LocalFederation) -> None:
    assert event["kind"] == "Event"
    assert event["apiVersion"] == "audit.k8s.io/v1"
    assert event["stage"] == "ResponseComplete"
    assert event["level"] == "Metadata"
    assert event["verb"] == "list"
    assert event["requestURI"] == ALLOWED
    assert event["responseStatus"]["code"] == 200
    assert event["sourceIPs"] == ["127.0.0.1"]
    assert event["objectRef"] == {
        "resource": "configmaps",
        "namespace": "alpha",
        "apiVersion": "v1",
    }
    assert event["user"]["username"] == "alpha:admiralty:multicluster-scheduler"
    assert event["user"]["extra"]["kproxy.io/issuer"] == [
        federation.issuer("alpha").url
    ]
    annotations = event["annotations"]
    assert annotations["kproxy.io/decision"] == "allow"
    assert annotations["kproxy.io/university"] == "alpha"
    assert annotations["kproxy.io/issuer"] == federation.issuer("alpha").url
    assert annotations["kproxy.io/subject"] == (
        "system:serviceaccount:admiralty:multicluster-scheduler"
    )
    assert "followed-objects" in annotations["kproxy.io/decided-by"]
    assert event["requestReceivedTimestamp"] <= event["stageTimestamp"]


def check_refused_event(event: dict[str, Any]) -> None:
    assert event["verb"] == "list"
    assert event["responseStatus"]["code"] == 403
    assert event["objectRef"]["namespace"] == "beta"
    assert event["user"]["username"] == "alpha:admiralty:multicluster-scheduler"
    assert event["annotations"]["kproxy.io/decision"] == "deny"
    assert event["annotations"]["kproxy.io/university"] == "alpha"


def check_unauthenticated_event(event: dict[str, Any]) -> None:
    assert event["responseStatus"]["code"] == 401
    assert event["user"] == {}
    assert event["annotations"]["kproxy.io/decision"] == "none"
    assert event["annotations"]["kproxy.io/authentication-failure"] == "bad_signature"
    assert "kproxy.io/issuer" not in event["annotations"]


def check_malformed_event(event: dict[str, Any]) -> None:
    assert event["responseStatus"]["code"] == 400
    assert event["requestURI"] == MALFORMED
    assert event["annotations"]["kproxy.io/decision"] == "none"
    assert "objectRef" not in event


def check_access_lines(
    lines: list[dict[str, Any]], events: dict[str, dict[str, Any]]
) -> None:
    assert len(lines) == 4
    by_agent = {line["userAgent"]: line for line in lines}
    for agent, event in events.items():
        line = by_agent[agent]
        assert line["msg"] == "HTTP"
        assert line["auditID"] == event["auditID"]
        assert line["status"] == event["responseStatus"]["code"]
        assert line["uri"] == event["requestURI"]
        assert line["verb"] == event["verb"]
        assert line["user"] == event["user"].get("username", "")
        assert line["latency"] >= 0
    assert by_agent["agent-forged"]["authFailure"] == "bad_signature"
    assert by_agent["agent-refused"]["decision"] == "deny"


def check_counters(before: dict[Any, float], after: dict[Any, float]) -> None:
    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    requests = "kproxy_requests_total"
    assert moved(requests, verb="list", code="200", university="alpha") == 1
    assert moved(requests, verb="list", code="403", university="alpha") == 1
    assert moved(requests, verb="get", code="401", university="none") == 1
    assert moved(requests, verb="get", code="400", university="none") == 1
    assert moved(requests, verb="list", code="200", university="beta") == 0
    failures = "kproxy_authentication_failures_total"
    assert moved(failures, reason="bad_signature") == 1
    assert moved(failures, reason="expired") == 0
    assert moved("kproxy_request_duration_seconds_count", verb="list") == 2


async def test_the_open_watches_gauge_follows_a_watch(
    federation: LocalFederation, client: aiohttp.ClientSession
) -> None:
    token = federation.scheduler_token("alpha")
    assert sample(await scrape(federation), "kproxy_open_watches") == 0

    async with client.get(federation.url + WATCH, headers=bearer(token)) as response:
        assert response.status == 200

        async def opened() -> bool | None:
            value = sample(await scrape(federation), "kproxy_open_watches")
            return True if value == 1 else None

        await eventually(opened, what="kproxy_open_watches at 1")

    async def closed() -> dict[Any, float] | None:
        parsed = await scrape(federation)
        return parsed if sample(parsed, "kproxy_open_watches") == 0 else None

    after = await eventually(closed, what="kproxy_open_watches back at 0")
    # The client left: the watch is counted once, under nginx's 499.
    assert (
        sample(
            after, "kproxy_requests_total", verb="watch", code="499", university="alpha"
        )
        == 1
    )


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
async def test_health_endpoints_answer_ok_on_the_probe_port(
    federation: LocalFederation, path: str
) -> None:
    status, text = await probe_text(federation.proxy.probe_addresses[0] + path)

    assert (status, text) == (200, "ok")


async def test_verbose_readiness_lists_every_check(
    federation: LocalFederation,
) -> None:
    address = federation.proxy.probe_addresses[0]

    status, text = await probe_text(address + "/readyz?verbose")

    assert status == 200
    assert text.splitlines() == [
        "[+]shutdown ok",
        "[+]issuers ok",
        "[+]apiserver ok",
        "readyz check passed",
    ]


async def test_the_probe_port_serves_no_proxy_requests(
    federation: LocalFederation,
) -> None:
    address = federation.proxy.probe_addresses[0]

    status, _ = await probe_text(address + ALLOWED)

    assert status == 404
