"""The access log, and how the whole process writes its log.

Every request ends in exactly one INFO record on the ``kproxy.access`` logger, message
``HTTP`` as in the API server's request log, with that log's fields (``verb``, ``uri``, ``status``,
``latency``, ``user``) plus kproxy's ``decision``. Nothing is formatted unless that
logger is enabled for INFO, so turning the access log off costs one level check per
request.

``configure_logging`` sets up the process once: one handler on the root logger, text
for people or JSON for collectors, and a filter that passes every record through
``kproxy.observe.redaction`` just before it is written, whichever module logged it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

from kproxy.observe.records import RequestRecord
from kproxy.observe.redaction import redact

ACCESS_LOGGER_NAME: Final = "kproxy.access"
access_logger: Final = logging.getLogger(ACCESS_LOGGER_NAME)

LogFormat = Literal["text", "json"]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The name of the handler configure_logging installs, to find it again.
_HANDLER_NAME: Final = "kproxy"

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# The attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None))
) | {"message", "asctime"}


def log_access(record: RequestRecord) -> None:
    """Write the access line of one finished request, if INFO is enabled."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    access_logger.info("HTTP", extra=access_fields(record))


def access_fields(record: RequestRecord) -> dict[str, Any]:
    """The structured fields of an access line, named as kube-apiserver names them."""
    return {
        "verb": record.verb,
        "uri": record.uri,
        "status": record.status,
        "latency": round(record.latency, 6),
        "user": record.user.username if record.user else "",
        "university": record.university,
        "decision": record.decision,
        "decidedBy": record.decided_by,
        "authFailure": record.auth_failure,
        "auditID": record.request_id,
        "srcIP": record.client_address,
        "userAgent": record.user_agent,
    }


def _logfmt(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return json.dumps(text)


def configure_logging(
    level: str, fmt: LogFormat, *, stream: TextIO | None = None
) -> None:
    """Send every logger's records to ``stream`` (stderr) at ``level``, redacted.

    Calling it again replaces the handler it installed before, so a reload or a test
    never ends up writing each line twice; handlers installed by others are kept.
    """
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(
            f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}"
        )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    handler.set_name(_HANDLER_NAME)

    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(numeric)


class TextFormatter(logging.Formatter):
    """One line per record, UTC timestamps, and any ``extra`` fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _extra_fields(record)
        if not fields:
            return line
        pairs = " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())
        head, newline, rest = line.partition("\n")
        return f"{head} {pairs}{newline}{rest}"

    def formatTime(  # noqa: N802  the name logging.Formatter calls
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        return _timestamp(record.created)


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with every ``extra`` field at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(_extra_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        return json.dumps(document, default=str, ensure_ascii=False)


class RedactingFilter(logging.Filter):
    """Replace anything that looks like a credential before a record is written.

    The message is rendered here, once, so that a token passed as an argument is
    caught as well as one in the format string; exceptions are rendered here too,
    because a formatter would otherwise print them unredacted afterwards.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        # One pass over all the string fields at once; field by field only when
        # that pass found something.
        fields = {k: v for k, v in _extra_fields(record).items() if isinstance(v, str)}
        joined = "\n".join(fields.values())
        if redact(joined) != joined:
            for key, value in fields.items():
                setattr(record, key, redact(value))
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
