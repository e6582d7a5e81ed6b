"""Tokens never reach a log line or the audit trail, accepted or refused.

A token in a log is a credential anyone with log access can replay until it expires,
so the test looks for the token itself and for its signature alone, at DEBUG level,
in every logger and in the audit file, after an accepted, a forbidden and a rejected
request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import MODULE_LOOP
from tests.security.federation import Federation, raw_exchange, request_bytes
from tests.security.forging import rs256, scheduler_claims

pytestmark = MODULE_LOOP


async def test_tokens_never_appear_in_logs_or_the_audit_trail(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    good = federation.token()
    forged = rs256(scheduler_claims(federation.alpha), federation.keys.spare)
    requests = [
        (good, "/api/v1/namespaces/alpha/pods"),
        (good, "/api/v1/namespaces/kube-system/secrets"),
        (forged, "/api/v1/namespaces/alpha/pods"),
    ]
    audit = federation.directory / "audit.log"
    lines_before = _lines(audit)

    with caplog.at_level(logging.DEBUG):
        async with federation.session() as session:
            for token, path in requests:
                headers = {"Authorization": f"Bearer {token}"}
                async with session.get(path, headers=headers) as response:
                    await response.read()
    # The audit trail is written by a thread: wait, boundedly, for our three lines.
    for _ in range(200):
        if _lines(audit) >= lines_before + len(requests):
            break
        await asyncio.sleep(0.05)

    written = audit.read_text()
    assert _lines(audit) >= lines_before + len(requests)
    for token in (good, forged):
        signature = token.rsplit(".", 1)[1]
        assert signature not in caplog.text
        assert signature not in written


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


async def test_bytes_that_are_not_utf8_cannot_stop_the_audit_trail(
    federation: Federation,
) -> None:
    # aiohttp hands header bytes that are not UTF-8 on as lone surrogates (the
    # request line refuses them), and a line holding one cannot be written as UTF-8.
    # Had that stopped the writer, every later request would go unaudited.
    audit = federation.directory / "audit.log"
    bad = request_bytes(
        "GET",
        "/api/v1/namespaces/alpha/pods",
        token=federation.token(),
        headers=(("User-Agent", "not-utf8-\udcff\udcfe"),),
    )
    response = await raw_exchange(federation, bad)
    # Such a header cannot be sent on to the API server either.
    assert response.status == 400
    async with federation.session() as session:
        headers = {
            "Authorization": f"Bearer {federation.token()}",
            "User-Agent": "after-the-bad-bytes",
        }
        async with session.get("/api/v1/namespaces/alpha/pods", headers=headers) as r:
            assert r.status == 200

    events = await _events_until(
        audit, lambda e: e["userAgent"] == "after-the-bad-bytes"
    )
    (odd,) = [e for e in events if e["userAgent"].startswith("not-utf8-")]
    assert odd["userAgent"] == "not-utf8-\udcff\udcfe"
    assert odd["responseStatus"]["code"] == 400


async def _events_until(
    audit: Path, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Every event of the audit file once one satisfies ``done``; bounded wait."""
    for _ in range(200):
        events = _events(audit)
        if any(done(event) for event in events):
            return events
        await asyncio.sleep(0.05)
    raise AssertionError("the audit trail never recorded the request")


def _events(audit: Path) -> list[dict[str, Any]]:
    # Strict UTF-8 and JSON on every line: what a log shipper would demand.
    text = audit.read_bytes().decode("utf-8") if audit.exists() else ""
    return [json.loads(line) for line in text.splitlines()]
