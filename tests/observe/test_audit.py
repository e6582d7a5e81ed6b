"""Audit events: one JSON line per request, shaped as ``audit.k8s.io/v1`` ``Event``."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kproxy.configfile import parse_document, validate
from kproxy.errors import ConfigError
from kproxy.observe.audit import (
    MAX_REQUEST_OBJECT_BYTES,
    AuditLevel,
    AuditLog,
    AuditSettings,
    RotatingFile,
    audit_line,
    rfc3339_micro,
)
from kproxy.observe.records import RequestRecord
from kproxy.policy.attributes import RequestInfo
from kproxy.policy.decision import Decision
from tests.observe.records import ALICE, TOKEN, allowed_record, unauthenticated_record

POD = json.dumps(
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
).encode()


def audit_lines(
    tmp_path: Path,
    *records: RequestRecord,
    level: AuditLevel = "Metadata",
    body: bytes | None = None,
) -> list[dict[str, Any]]:
    audit = AuditLog(AuditSettings(path="audit.log", level=level), base_dir=tmp_path)
    for record in records:
        audit.write(record, body=body)
    audit.close()
    text = (tmp_path / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_an_allowed_request_becomes_a_complete_event(tmp_path: Path) -> None:
    (event,) = audit_lines(tmp_path, allowed_record())

    assert event["kind"] == "Event"
    assert event["apiVersion"] == "audit.k8s.io/v1"
    assert event["level"] == "Metadata"
    assert event["auditID"] == "3f1c6a52-8d7e-4b7f-9c1e-2a4b6c8d0e1f"
    assert event["stage"] == "ResponseComplete"
    assert event["requestURI"] == "/api/v1/namespaces/alpha/pods?fieldManager=kubectl"
    assert event["verb"] == "create"
    assert event["user"] == {
        "username": "alpha:alice",
        "uid": "u-1",
        "groups": ["alpha:students", "alpha:all"],
        "extra": {"kproxy.io/issuer": ["https://idp.alpha.edu"]},
    }
    assert "impersonatedUser" not in event
    assert event["sourceIPs"] == ["10.0.0.7"]
    assert event["userAgent"] == "kubectl/v1.32.4 (linux/amd64)"
    assert event["objectRef"] == {
        "resource": "pods",
        "namespace": "alpha",
        "apiVersion": "v1",
    }
    assert event["responseStatus"] == {"metadata": {}, "code": 201}
    assert event["requestReceivedTimestamp"] == "2023-11-14T22:13:20.250000Z"
    assert event["stageTimestamp"] == "2023-11-14T22:13:20.262500Z"
    assert event["annotations"] == {
        "kproxy.io/issuer": "https://idp.alpha.edu",
        "kproxy.io/subject": "alice@alpha.edu",
        "kproxy.io/university": "alpha",
        "kproxy.io/decision": "allow",
        "kproxy.io/decided-by": "policies/alpha.yaml: rules[0] (pods)",
        "kproxy.io/client-address": "10.0.0.7",
    }
    assert "requestObject" not in event


def test_an_unauthenticated_request_is_audited_without_a_user(tmp_path: Path) -> None:
    (event,) = audit_lines(tmp_path, unauthenticated_record())

    assert event["user"] == {}
    assert event["verb"] == "get"
    assert event["responseStatus"]["code"] == 401
    assert "objectRef" not in event
    assert event["annotations"] == {
        "kproxy.io/decision": "none",
        "kproxy.io/client-address": "192.0.2.9",
        "kproxy.io/authentication-failure": "expired",
    }


def test_a_refused_request_is_audited_with_the_user_it_refused(tmp_path: Path) -> None:
    denial = Decision(
        allowed=False, decided_by="no rule matched", university="alpha", user=ALICE
    )
    record = allowed_record(decision=denial, user=None, status=403)

    (event,) = audit_lines(tmp_path, record)

    assert event["user"]["username"] == "alpha:alice"
    assert event["responseStatus"]["code"] == 403
    assert event["annotations"]["kproxy.io/decision"] == "deny"
    assert event["annotations"]["kproxy.io/decided-by"] == "no rule matched"


def test_the_body_of_a_write_is_recorded_at_level_request(tmp_path: Path) -> None:
    (event,) = audit_lines(tmp_path, allowed_record(), level="Request", body=POD)

    assert event["level"] == "Request"
    assert event["requestObject"] == json.loads(POD)


def test_no_body_is_recorded_at_level_metadata(tmp_path: Path) -> None:
    (event,) = audit_lines(tmp_path, allowed_record(), level="Metadata", body=POD)

    assert "requestObject" not in event


def test_the_body_of_a_read_is_not_recorded(tmp_path: Path) -> None:
    read = RequestInfo(verb="get", path="/api/v1/pods", is_resource_request=True)
    record = allowed_record(info=read, method="GET")

    (event,) = audit_lines(tmp_path, record, level="Request", body=POD)

    assert "requestObject" not in event


@pytest.mark.parametrize(
    ("resource", "body", "reason"),
    [
        pytest.param(
            "secrets",
            b'{"data":{"k":"dg=="}}',
            "secrets are never recorded",
            id="secret",
        ),
        pytest.param(
            "pods",
            b"x" * (MAX_REQUEST_OBJECT_BYTES + 1),
            "over 65536 bytes",
            id="large",
        ),
        pytest.param("pods", b"\x0a\x02v1", "not JSON", id="protobuf"),
    ],
)
def test_some_bodies_are_withheld_with_a_reason(
    tmp_path: Path, resource: str, body: bytes, reason: str
) -> None:
    info = RequestInfo(
        verb="create",
        path="/",
        is_resource_request=True,
        api_version="v1",
        resource=resource,
    )

    (event,) = audit_lines(
        tmp_path, allowed_record(info=info), level="Request", body=body
    )

    assert "requestObject" not in event
    assert event["annotations"]["kproxy.io/request-object"] == f"omitted: {reason}"


def test_no_token_reaches_the_audit_log(tmp_path: Path) -> None:
    record = allowed_record(
        uri=f"/api/v1/namespaces/alpha/pods?token={TOKEN}",
        user_agent=f"client Bearer {TOKEN}",
    )
    body = json.dumps({"kind": "ConfigMap", "data": {"kubeconfig": TOKEN}}).encode()

    audit_lines(tmp_path, record, level="Request", body=body)

    text = (tmp_path / "audit.log").read_text()
    assert TOKEN.split(".")[1] not in text
    assert "Authorization" not in text
    assert "[REDACTED]" in text


def test_every_queued_event_is_written_before_close_returns(tmp_path: Path) -> None:
    records = [allowed_record(request_id=str(n)) for n in range(500)]

    events = audit_lines(tmp_path, *records)

    assert [event["auditID"] for event in events] == [str(n) for n in range(500)]


def test_events_go_to_stdout_for_a_dash(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog(AuditSettings(path="-"), base_dir=Path("/nonexistent"))
    audit.write(allowed_record())
    audit.close()

    assert json.loads(capsys.readouterr().out)["kind"] == "Event"


def test_a_disabled_audit_log_writes_nothing(tmp_path: Path) -> None:
    audit = AuditLog(AuditSettings(enabled=False, path="audit.log"), base_dir=tmp_path)
    audit.write(allowed_record())
    audit.close()

    assert not (tmp_path / "audit.log").exists()


def test_an_unopenable_path_is_a_configuration_error(tmp_path: Path) -> None:
    settings = AuditSettings(path="missing/dir/audit.log")

    with pytest.raises(ConfigError) as caught:
        AuditLog(settings, base_dir=tmp_path)

    (problem,) = caught.value.problems
    assert problem.field == "audit.path"
    assert "No such file or directory" in problem.message


class CountingEvents:
    def __init__(self) -> None:
        self.dropped = 0

    def audit_dropped(self) -> None:
        self.dropped += 1


def test_a_failing_write_is_counted_and_warned_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = CountingEvents()
    audit = AuditLog(AuditSettings(path="/dev/full"), base_dir=Path("/"), events=events)

    with caplog.at_level(logging.WARNING, logger="kproxy.observe.audit"):
        audit.write(allowed_record())
        audit.close()

    assert events.dropped == 1
    assert audit.dropped == 1
    assert "cannot write the audit log" in caplog.text


def test_the_file_rotates_by_size_keeping_the_configured_backups(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    rotating = RotatingFile(path, max_bytes=100, backups=2)
    for n in range(5):
        rotating.write(f"{n}" * 59 + "\n")
    rotating.close()

    assert path.read_text() == "4" * 59 + "\n"
    assert (tmp_path / "audit.log.1").read_text() == "3" * 59 + "\n"
    assert (tmp_path / "audit.log.2").read_text() == "2" * 59 + "\n"
    assert not (tmp_path / "audit.log.3").exists()


def test_rotation_continues_from_the_size_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("x" * 90)

    rotating = RotatingFile(path, max_bytes=100, backups=1)
    rotating.write("y" * 20)
    rotating.close()

    assert (tmp_path / "audit.log.1").read_text() == "x" * 90
    assert path.read_text() == "y" * 20


def test_settings_read_from_a_file_use_the_documented_keys() -> None:
    document = parse_document(
        "path: /var/log/kproxy/audit.log\nmaxSizeMB: 50\nmaxBackups: 3\nlevel: Request\n",
        "config.yaml",
    )

    settings = validate(document, AuditSettings)

    assert settings == AuditSettings(
        path="/var/log/kproxy/audit.log", max_size_mb=50, max_backups=3, level="Request"
    )


def test_an_unknown_level_names_its_line() -> None:
    document = parse_document("path: '-'\nlevel: RequestResponse\n", "config.yaml")

    with pytest.raises(ConfigError) as caught:
        validate(document, AuditSettings)

    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (2, "level")


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        pytest.param(0.0, "1970-01-01T00:00:00.000000Z", id="epoch"),
        pytest.param(1700000000.0, "2023-11-14T22:13:20.000000Z", id="whole-second"),
        pytest.param(1700000000.25, "2023-11-14T22:13:20.250000Z", id="fraction"),
        pytest.param(1.9999999, "1970-01-01T00:00:02.000000Z", id="rounded-up"),
    ],
)
def test_timestamps_are_written_as_the_api_servers_micro_time(
    seconds: float, written: str
) -> None:
    assert rfc3339_micro(seconds) == written


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_a_timestamp_names_its_moment_to_the_microsecond(seconds: float) -> None:
    written = rfc3339_micro(seconds)

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", written)
    moment = datetime.fromisoformat(written)
    assert abs(moment.timestamp() - seconds) <= 1e-6


def test_header_bytes_that_are_not_utf8_are_written_escaped() -> None:
    # aiohttp decodes such bytes to lone surrogates; a UTF-8 file cannot hold them.
    record = dataclasses.replace(allowed_record(), user_agent="curl\udcff")

    line = audit_line(record, level="Metadata", body=None)

    assert line.isascii()
    assert json.loads(line)["userAgent"] == "curl\udcff"


def test_a_request_object_with_a_huge_integer_is_recorded_whole() -> None:
    record = dataclasses.replace(allowed_record(), verb="create", resource="configmaps")
    body = b'{"data": {"n": 123456789012345678901234567890}}'

    line = audit_line(record, level="Request", body=body)

    assert json.loads(line)["requestObject"] == json.loads(body)


def test_an_event_that_cannot_be_rendered_is_dropped_not_the_trail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kproxy.observe import audit

    original = audit.audit_line

    def fragile(record: RequestRecord, **kwargs: Any) -> str:
        if record.request_id == "broken":
            raise RuntimeError("a rendering bug")
        return original(record, **kwargs)

    monkeypatch.setattr(audit, "audit_line", fragile)
    log = AuditLog(AuditSettings(path="audit.log"), base_dir=tmp_path)
    log.write(dataclasses.replace(allowed_record(), request_id="broken"))
    log.write(dataclasses.replace(allowed_record(), request_id="after"))
    log.close()

    written = [
        json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()
    ]
    assert [event["auditID"] for event in written] == ["after"]
    assert log.dropped == 1
