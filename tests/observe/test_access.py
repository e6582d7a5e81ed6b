"""One access line per request, text or JSON, and no credential in any log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kproxy.observe.access import ACCESS_LOGGER_NAME, configure_logging, log_access
from kproxy.observe.records import RequestRecord
from tests.observe.records import TOKEN, allowed_record, unauthenticated_record


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards: configure_logging changes the process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_each_request_is_one_json_line_with_the_api_server_field_names(
    root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    log_access(allowed_record())

    (line,) = lines(stream)
    entry = json.loads(line)
    assert entry["logger"] == ACCESS_LOGGER_NAME
    assert entry["level"] == "INFO"
    assert entry["message"] == "HTTP"
    assert entry["verb"] == "create"
    assert entry["uri"] == "/api/v1/namespaces/alpha/pods?fieldManager=kubectl"
    assert entry["status"] == 201
    assert entry["latency"] == 0.0125
    assert entry["user"] == "alpha:alice"
    assert entry["university"] == "alpha"
    assert entry["decision"] == "allow"
    assert entry["decidedBy"] == "policies/alpha.yaml: rules[0] (pods)"
    assert entry["auditID"] == "3f1c6a52-8d7e-4b7f-9c1e-2a4b6c8d0e1f"
    assert entry["srcIP"] == "10.0.0.7"
    assert entry["userAgent"] == "kubectl/v1.32.4 (linux/amd64)"
    assert entry["time"].endswith("Z")


def test_text_lines_carry_the_fields_as_key_value_pairs(
    root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)

    log_access(unauthenticated_record())

    (line,) = lines(stream)
    assert " INFO kproxy.access: HTTP verb=get uri=/api/v1/secrets status=401 " in line
    assert 'user="" ' in line
    assert "decision=none " in line
    assert "authFailure=expired " in line
    assert 'userAgent="curl/8.5.0"' not in line
    assert "userAgent=curl/8.5.0" in line


class _Untouchable:
    """A user whose every attribute fails: proves the record was never read."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the access log read {name!r} while disabled")


def test_nothing_is_built_when_info_is_disabled(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    record = RequestRecord(
        request_id="r",
        started_at=0.0,
        latency=0.0,
        client_address="",
        method="GET",
        uri="/",
        status=200,
        user=_Untouchable(),  # type: ignore[arg-type]
    )

    log_access(record)

    assert stream.getvalue() == ""


def test_a_token_in_a_message_argument_is_redacted(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("debug", "text", stream=stream)

    logging.getLogger("kproxy.some.module").warning("upstream said %s", TOKEN)

    assert TOKEN not in stream.getvalue()
    assert "upstream said [REDACTED]" in stream.getvalue()


def test_a_token_in_an_exception_or_an_extra_field_is_redacted(
    root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    try:
        raise ValueError(f"bad header Bearer {TOKEN}")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("failed", extra={"uri": TOKEN})

    entry = json.loads(stream.getvalue())
    assert TOKEN not in stream.getvalue()
    assert entry["uri"] == "[REDACTED]"
    assert "ValueError: bad header [REDACTED]" in entry["exception"]


def test_a_token_in_a_client_controlled_field_is_redacted(
    root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)

    log_access(allowed_record(uri=f"/version?t={TOKEN}", user_agent=f"Bearer {TOKEN}"))

    assert "eyJ" not in stream.getvalue()
    assert 'uri="/version?t=[REDACTED]"' in stream.getvalue()


def test_configuring_again_replaces_the_handler(root_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "text", stream=first)
    configure_logging("info", "json", stream=second)

    log_access(allowed_record())

    assert first.getvalue() == ""
    assert len(lines(second)) == 1


def test_an_unknown_level_is_refused(root_logger: logging.Logger) -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging("verbose", "text")
