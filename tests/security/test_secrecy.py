"""Tokens never reach a log line or the audit trail, accepted or refused.

A token in a log is a credential anyone with log access can replay until it expires,
so the test looks for the token itself and for its signature alone, at DEBUG level,
in every logger and in the audit file, after an accepted, a forbidden and a rejected
request.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.security.conftest import MODULE_LOOP
from tests.security.federation import Federation
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
