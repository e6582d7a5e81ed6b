"""The audit trail: one ``audit.k8s.io/v1`` ``Event`` per request, as JSON lines.

Tools that read the API server's audit log (log shippers, SIEM rules, ``jq`` recipes)
read kproxy's unchanged: each line is an ``Event`` at stage ``ResponseComplete``, with
the same field names, timestamps in RFC 3339 with microseconds and the outcome in
``responseStatus.code``. What kproxy adds goes where the API server puts its own
additions: in ``annotations``, under ``kproxy.io/``.

Whose request it was. To the target API server the caller is kproxy, impersonating
someone; to kproxy the caller is whoever the verified token names, after the
university's policy mapped it to a Kubernetes user. That mapping is authentication, as
the API server's own OIDC authenticator maps claims to a user, so ``user`` is the
mapped user and ``impersonatedUser`` stays empty: the client never asked to impersonate
anyone (kproxy strips such headers). The token behind the user is named by the
``kproxy.io/issuer`` and ``kproxy.io/subject`` annotations. A request refused before a
user was known has an empty ``user``, as the API server writes it for a failed login.
Every request is recorded, refused and unauthenticated ones included.

What is never written: a token, an ``Authorization`` header, any header but
``User-Agent``, and request bodies of secrets (level ``Request`` records the bodies of
other writes, up to ``MAX_REQUEST_OBJECT_BYTES``). Every line is passed through
``redact`` before it is queued, in case a client put a token in a URI or a body.

Writing never blocks the event loop: an event is queued and a writer thread appends it
to stdout or to a file rotated by size (``audit.log``, ``audit.log.1`` ... as
``RotatingFileHandler`` names them). The thread takes the queue in batches and is woken
only when it is idle, so under load it costs one wake-up per batch rather than one per
event. When the queue is full the event is dropped and counted rather than stalling
requests, as the API server's buffered audit backend does.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol

import orjson
from pydantic import Field

from kproxy.configfile import Model
from kproxy.errors import ConfigError
from kproxy.observe.records import RequestRecord
from kproxy.observe.redaction import redact

logger = logging.getLogger(__name__)

AuditLevel = Literal["Metadata", "Request"]

MAX_REQUEST_OBJECT_BYTES: Final = 64 * 1024
QUEUE_LENGTH: Final = 10_000
# The writer rests this long after each batch, so a busy proxy wakes it (and hands
# it the interpreter lock) a few times a second rather than once per request.
BATCH_SECONDS: Final = 0.05
WRITE_VERBS: Final = frozenset(
    {"create", "update", "patch", "delete", "deletecollection"}
)
# (API group, resource) whose bodies hold credentials: never recorded at any level.
SENSITIVE_RESOURCES: Final = frozenset(
    {("", "secrets"), ("authentication.k8s.io", "tokenreviews")}
)
STDOUT: Final = "-"

_Pending = tuple[RequestRecord, bytes | None]


class AuditSettings(Model):
    """The ``audit`` section of the configuration file."""

    enabled: bool = True
    path: str = Field(default=STDOUT, min_length=1)
    max_size_mb: int = Field(default=100, ge=1, le=1_000_000, alias="maxSizeMB")
    max_backups: int = Field(default=5, ge=1, le=1000)
    level: AuditLevel = "Metadata"


class AuditEvents(Protocol):
    """Told when an event could not be written, so a metric can count it."""

    def audit_dropped(self) -> None: ...


class AuditLog:
    """Queues one event per request for a writer thread; ``close`` flushes it."""

    def __init__(
        self,
        settings: AuditSettings,
        *,
        base_dir: Path,
        events: AuditEvents | None = None,
        queue_length: int = QUEUE_LENGTH,
    ) -> None:
        self.settings = settings
        self.dropped = 0
        self._events = events
        self._queue = _Batches(queue_length)
        self._writer: threading.Thread | None = None
        if settings.enabled:
            sink = _open_sink(settings, base_dir=base_dir)
            self._writer = threading.Thread(
                target=_Writer(self._queue, sink, self._drop, settings.level).run,
                name="kproxy-audit-writer",
                daemon=True,
            )
            self._writer.start()

    def write(self, record: RequestRecord, *, body: bytes | None = None) -> None:
        """Queue the event of one finished request; never blocks.

        ``body`` is the request body, recorded for writes at level ``Request`` only.
        """
        if self._writer is None:
            return
        # Rendering (a body may be parsed, every line is scanned for tokens) is left
        # to the writer thread: the event loop only hands over two immutable values.
        if not self._queue.put((record, body)):
            self._drop()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer; later events are ignored."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._queue.close()
        writer.join(timeout)
        if writer.is_alive():
            logger.warning(
                "the audit log did not drain in %gs; events are lost", timeout
            )

    def _drop(self) -> None:
        self.dropped += 1
        if self._events is not None:
            self._events.audit_dropped()
        if self.dropped == 1 or self.dropped % 1000 == 0:
            logger.warning("audit events dropped so far: %d", self.dropped)


def audit_line(record: RequestRecord, *, level: AuditLevel, body: bytes | None) -> str:
    """One line of the audit log: the event as compact JSON, redacted.

    orjson writes it, ten times faster than the standard encoder, since this runs for
    every request. What orjson refuses is written by the standard encoder, escaped to
    ASCII: header bytes that were not UTF-8 reach kproxy as lone surrogates, which
    no UTF-8 file can hold, and a request object may hold integers beyond 64 bits.
    """
    event = audit_event(record, level=level, body=body)
    try:
        text = orjson.dumps(event).decode("utf-8")
    except orjson.JSONEncodeError:
        text = json.dumps(event, separators=(",", ":"))
    return redact(text) + "\n"


def audit_event(
    record: RequestRecord, *, level: AuditLevel, body: bytes | None = None
) -> dict[str, Any]:
    """Render a record as an ``audit.k8s.io/v1`` ``Event`` at ``ResponseComplete``."""
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": record.request_id,
        "stage": "ResponseComplete",
        "requestURI": record.uri,
        "verb": record.verb,
        "user": _user(record),
        "sourceIPs": [record.client_address] if record.client_address else [],
        "userAgent": record.user_agent,
        "responseStatus": {"metadata": {}, "code": record.status},
        "requestReceivedTimestamp": rfc3339_micro(record.started_at),
        "stageTimestamp": rfc3339_micro(record.started_at + record.latency),
        "annotations": _annotations(record),
    }
    if record.is_resource_request:
        event["objectRef"] = _object_ref(record)
    if level == "Request" and body is not None and record.verb in WRITE_VERBS:
        _add_request_object(event, record, body)
    return event


def rfc3339_micro(seconds: float) -> str:
    """Format a time as the API server's ``MicroTime``: UTC, six decimals, ``Z``."""
    whole, micro = divmod(round(seconds * 1_000_000), 1_000_000)
    return f"{_whole_second(whole)}.{micro:06d}Z"


@functools.lru_cache(maxsize=4)
def _whole_second(seconds: int) -> str:
    # Events of the same second share this part; formatting it is most of the cost.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _user(record: RequestRecord) -> dict[str, Any]:
    user = record.user
    if user is None:
        return {}
    rendered: dict[str, Any] = {"username": user.username}
    if user.uid:
        rendered["uid"] = user.uid
    if user.groups:
        rendered["groups"] = list(user.groups)
    if user.extra:
        rendered["extra"] = {key: list(values) for key, values in user.extra.items()}
    return rendered


def _object_ref(record: RequestRecord) -> dict[str, str]:
    fields = {
        "resource": record.resource,
        "namespace": record.namespace,
        "name": record.name,
        "apiGroup": record.api_group,
        "apiVersion": record.api_version,
        "subresource": record.subresource,
    }
    return {key: value for key, value in fields.items() if value}


def _annotations(record: RequestRecord) -> dict[str, str]:
    annotations = {
        "kproxy.io/decision": record.decision,
        "kproxy.io/client-address": record.client_address,
        "kproxy.io/issuer": record.issuer,
        "kproxy.io/subject": record.subject,
        "kproxy.io/university": record.university,
        "kproxy.io/decided-by": record.decided_by,
        "kproxy.io/authentication-failure": record.auth_failure,
    }
    return {key: value for key, value in annotations.items() if value}


def _add_request_object(
    event: dict[str, Any], record: RequestRecord, body: bytes
) -> None:
    reason = _withheld_because(record, body)
    if reason is None:
        try:
            event["requestObject"] = json.loads(body)
            return
        except ValueError:
            reason = "not JSON"
    event["annotations"]["kproxy.io/request-object"] = f"omitted: {reason}"


def _withheld_because(record: RequestRecord, body: bytes) -> str | None:
    if (record.api_group, record.resource) in SENSITIVE_RESOURCES:
        return f"{record.resource} are never recorded"
    if len(body) > MAX_REQUEST_OBJECT_BYTES:
        return f"over {MAX_REQUEST_OBJECT_BYTES} bytes"
    return None


class _Sink(Protocol):
    def write(self, text: str) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _open_sink(settings: AuditSettings, *, base_dir: Path) -> _Sink:
    if settings.path == STDOUT:
        return _StreamSink(sys.stdout)
    path = base_dir / settings.path
    try:
        return RotatingFile(
            path,
            max_bytes=settings.max_size_mb * 1024 * 1024,
            backups=settings.max_backups,
        )
    except OSError as exc:
        raise ConfigError.single(
            str(path), f"cannot open the audit log: {exc.strerror}", field="audit.path"
        ) from exc


class _Batches:
    """Events waiting for the writer thread, handed over a whole list at a time.

    The lock is held only to append or to swap the list. The writer is signalled only
    when it waits for work: while it writes one batch the next one gathers without
    waking anyone, so a busy proxy pays for a thread switch per batch, not per event.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._pending: list[_Pending] = []
        self._idle = False
        self._closed = False

    def put(self, item: _Pending) -> bool:
        """Queue ``item``; ``False`` when the queue is full or closed."""
        with self._lock:
            if self._closed or len(self._pending) >= self._capacity:
                return False
            self._pending.append(item)
            if self._idle:
                self._idle = False
                self._ready.notify()
        return True

    def take(self) -> list[_Pending] | None:
        """Wait for events and return all of them; ``None`` once closed and empty."""
        with self._lock:
            while not self._pending and not self._closed:
                self._idle = True
                self._ready.wait()
            self._idle = False
            batch, self._pending = self._pending, []
        return batch or None

    def rest(self, seconds: float) -> None:
        """Let events gather for ``seconds``; ``close`` ends the rest early."""
        with self._lock:
            if not self._closed:
                self._ready.wait(seconds)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ready.notify()


class _Writer:
    """The writer thread's loop: everything here may block, nothing here may raise.

    Lines are flushed once per batch, so a burst costs one flush rather than one per
    line. Lines lost to a failing write are counted as dropped, and the failure is
    logged when it starts and when it ends rather than once per line.
    """

    def __init__(
        self,
        batches: _Batches,
        sink: _Sink,
        drop: Callable[[], None],
        level: AuditLevel,
    ) -> None:
        self.batches = batches
        self.level = level
        self.sink = sink
        self.drop = drop
        self.unflushed = 0
        self.failing = False

    def run(self) -> None:
        try:
            while (batch := self.batches.take()) is not None:
                for record, body in batch:
                    line = self._render(record, body)
                    if line is not None and self._attempt(self.sink.write, line):
                        self.unflushed += 1
                self._flush()
                self.batches.rest(BATCH_SECONDS)
        finally:
            self._attempt(self.sink.close)

    def _render(self, record: RequestRecord, body: bytes | None) -> str | None:
        try:
            return audit_line(record, level=self.level, body=body)
        except Exception:
            # A fault in one event must cost that event, never the audit trail.
            logger.exception("cannot render the audit event of %s", record.request_id)
            self.drop()
            return None

    def _flush(self) -> None:
        if not self._attempt(self.sink.flush):
            for _ in range(self.unflushed):
                self.drop()
        self.unflushed = 0

    def _attempt(self, action: Callable[..., None], *args: str) -> bool:
        try:
            action(*args)
        except (OSError, ValueError) as exc:
            if not self.failing:
                logger.warning(
                    "cannot write the audit log: %s",
                    getattr(exc, "strerror", None) or exc,
                )
            self.failing = True
            return False
        if self.failing:
            logger.info("the audit log can be written again")
        self.failing = False
        return True


class _StreamSink:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


_FILE_BUFFER_BYTES: Final = 1 << 20


class RotatingFile:
    """A file that is renamed to ``name.1`` (and older ones shifted) when it is full.

    The naming and order are ``logging.handlers.RotatingFileHandler``'s, so log
    shippers configured for Python services follow it. A single line larger than the
    limit is still written whole, to a fresh file.
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = self._open()

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._size += len(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _open(self) -> IO[bytes]:
        # Kept open across writes. The writer flushes after every batch; a buffer
        # that holds a whole batch makes that one system call, not one per 8 KiB.
        handle = open(self.path, "ab", buffering=_FILE_BUFFER_BYTES)  # noqa: SIM115
        self._size = handle.tell()
        return handle

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self._open()
