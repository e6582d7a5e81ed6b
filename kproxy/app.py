"""Wiring: one request's path through kproxy, and the application that serves it.

A request is handled in four steps, each a call into its own package::

    bearer token ──authenticate──▶ Identity
    method, path ──parse_request─▶ RequestInfo
    both ──────────decide────────▶ Decision (allow, naming the rule, as a UserInfo)
    request, user ─forward/tunnel─▶ the API server's response, streamed back

Between deciding and forwarding, the caller's university pays for the request out of
its rate and concurrency bounds (``kproxy.limiting``), so a refusal there is charged to
someone who proved who they are. Any step may refuse with a ``KproxyError``; it becomes
a Kubernetes ``Status`` here and nowhere else. Whatever happens, exactly one record of
the request reaches the access log, the audit trail and the metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass
from types import MappingProxyType

from aiohttp import hdrs, web

from kproxy.auth.identity import (
    PROVENANCE_ISSUER,
    PROVENANCE_SUBJECT,
    Identity,
    UserInfo,
)
from kproxy.auth.verifying import TokenAuthenticator
from kproxy.config import LimitSettings
from kproxy.errors import (
    AuthenticationError,
    CouldNotCheckError,
    ForbiddenError,
    KproxyError,
    RequestTooLargeError,
    StatusDetails,
    UpstreamError,
)
from kproxy.limiting import Bounds, Limiter, Slots
from kproxy.observe.access import log_access
from kproxy.observe.audit import AuditLog
from kproxy.observe.metrics import Metrics
from kproxy.observe.records import RequestRecord
from kproxy.policy.attributes import RequestInfo, parse_request
from kproxy.policy.decision import Decision
from kproxy.policy.reloading import PolicyStore
from kproxy.proxy.errors import status_response
from kproxy.proxy.forwarding import forward
from kproxy.proxy.tunneling import is_upgrade, tunnel
from kproxy.proxy.upstream import Upstream

CLIENT_CLOSED_REQUEST = 499


@dataclass(frozen=True, slots=True)
class Components:
    """Everything the request path reads, as configured at one moment.

    A request reads the components once, when it starts, and keeps them to its end;
    a configuration reload builds new ones and swaps ``LiveComponents.current``.
    """

    authenticator: TokenAuthenticator
    policies: PolicyStore
    upstream: Upstream
    metrics: Metrics
    audit: AuditLog
    limiter: Limiter
    max_body_bytes: int
    provenance: bool = True


class LiveComponents:
    """The components new requests use: one reference, replaced whole on reload."""

    __slots__ = ("current",)

    def __init__(self, current: Components) -> None:
        self.current = current


class RequestIds:
    """Request ids shaped as version 4 UUIDs: a random prefix, then a counter.

    The id names a request in the access log and the audit trail (``auditID``), so it
    must be unique across replicas and restarts; 74 random bits per process see to
    that. Only the last 48 bits count, which spares each request the system call for
    fresh randomness that ``uuid.uuid4`` makes.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        # "xxxxxxxx-xxxx-4xxx-yxxx-": the random part, with version and variant.
        self._prefix = str(uuid.uuid4())[:24]
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


COMPONENTS = web.AppKey("components", LiveComponents)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)


@dataclass(slots=True)
class _Trace:
    """What the steps learnt about one request, for its single record."""

    identity: Identity | None = None
    info: RequestInfo | None = None
    decision: Decision | None = None
    user: UserInfo | None = None
    failure: str = ""
    status: int = 500


async def handle(request: web.Request) -> web.StreamResponse:
    """Serve one client request: authenticate, authorize, forward, and record it."""
    components = request.app[COMPONENTS].current
    started = time.time()
    trace = _Trace()
    try:
        response = await _serve(request, components, trace)
    except KproxyError as exc:
        if isinstance(exc, AuthenticationError | CouldNotCheckError):
            trace.failure = exc.cause
        trace.status = exc.status_code
        if isinstance(exc, UpstreamError):
            components.metrics.upstream_error(exc.reason)
        response = status_response(exc)
    except asyncio.CancelledError:
        # The client left (aiohttp cancels the handler); nginx's 499 says so.
        trace.status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        _record(request, components, trace, started=started)
    return response


async def _serve(
    request: web.Request, components: Components, trace: _Trace
) -> web.StreamResponse:
    token = bearer_token(request)
    trace.identity = await components.authenticator.authenticate(token)

    raw_path, _, raw_query = request.raw_path.partition("?")
    trace.info = parse_request(request.method, raw_path, raw_query)

    trace.decision = components.policies.current.decide(trace.identity, trace.info)
    if not trace.decision.allowed or trace.decision.user is None:
        raise ForbiddenError(
            trace.decision.message or _refusal(trace.info),
            details=_forbidden_details(trace.info),
        )

    trace.user = _impersonated(trace.decision.user, trace.identity, components)
    with _admitted(request, components, trace.identity, trace.decision, trace.info):
        response = await _relay(request, components, trace.user, trace.info)
    trace.status = response.status
    return response


def _admitted(
    request: web.Request,
    components: Components,
    identity: Identity,
    decision: Decision,
    info: RequestInfo,
) -> Slots:
    """Charge the request to its caller and university, or refuse it (413, 429).

    The rate is charged at once; the slots returned are held while they are entered.
    """
    _check_body_size(request, components.max_body_bytes)
    limiter = components.limiter
    university = decision.university or ""
    limiter.check_rate(university)
    caller = f"{identity.issuer} {identity.subject}"
    long_running = info.verb == "watch" or is_upgrade(request)
    return limiter.in_flight(caller, university, long_running=long_running)


def _check_body_size(request: web.Request, limit: int) -> None:
    # Bodies are streamed, so this bounds what reaches the API server rather than
    # kproxy's memory. A declared length is refused before anything is sent; a body
    # without one (chunked) is counted as it streams, by ``forward``.
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLargeError(
            f"the request body of {length} bytes is larger than the limit of "
            f"{limit} bytes"
        )


async def _relay(
    request: web.Request, components: Components, user: UserInfo, info: RequestInfo
) -> web.StreamResponse:
    metrics = components.metrics
    if is_upgrade(request):
        metrics.tunnel_opened()
        try:
            return await tunnel(request, components.upstream, user)
        finally:
            metrics.tunnel_closed()
    limit = components.max_body_bytes
    if info.verb != "watch":
        return await forward(request, components.upstream, user, max_body_bytes=limit)
    metrics.watch_opened()
    try:
        return await forward(request, components.upstream, user, max_body_bytes=limit)
    finally:
        metrics.watch_closed()


def bearer_token(request: web.BaseRequest) -> str:
    """Return the bearer token of a request, refusing anything else as a 401."""
    authorization = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(authorization) != 1:
        raise AuthenticationError("a single bearer token is required")
    scheme, _, token = authorization[0].partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("a single bearer token is required")
    return token


def _impersonated(
    user: UserInfo, identity: Identity, components: Components
) -> UserInfo:
    if not components.provenance:
        return user
    extra: dict[str, tuple[str, ...]] = dict(user.extra)
    extra[PROVENANCE_ISSUER] = (identity.issuer,)
    extra[PROVENANCE_SUBJECT] = (identity.subject,)
    return UserInfo(
        username=user.username,
        uid=user.uid,
        groups=user.groups,
        extra=MappingProxyType(extra),
    )


def _forbidden_details(info: RequestInfo) -> StatusDetails | None:
    # As kube-apiserver's NewForbidden: the group and resource, and the name if any.
    if not info.is_resource_request:
        return None
    details: StatusDetails = {"group": info.api_group, "kind": info.resource}
    if info.name:
        details["name"] = info.name
    return details


def _refusal(info: RequestInfo) -> str:
    if not info.is_resource_request:
        return f"{info.verb} {info.path!r} is forbidden: no rule matched"
    return f"{info.verb} {info.resource!r} is forbidden: no rule matched"


def _record(
    request: web.Request, components: Components, trace: _Trace, *, started: float
) -> None:
    record = RequestRecord.build(
        request_id=request.app[REQUEST_IDS].next(),
        started=started,
        latency=time.time() - started,
        client_address=request.remote or "",
        method=request.method,
        uri=request.raw_path,
        user_agent=request.headers.get(hdrs.USER_AGENT, ""),
        status=trace.status,
        info=trace.info,
        identity=trace.identity,
        decision=trace.decision,
        user=trace.user,
        failure=trace.failure,
    )
    log_access(record)
    components.audit.write(record)
    components.metrics.observe(record)


def build_app(components: Components, *, limits: LimitSettings) -> web.Application:
    """The proxy application: every method and path goes through ``handle``.

    The header and idle bounds of ``limits`` are the HTTP server's own and stay as
    they were at start; the rest are read from the components of each request.
    """
    app = web.Application(
        handler_args={
            "max_line_size": limits.max_header_bytes,
            "max_field_size": limits.max_header_bytes,
            # aiohttp's keep-alive timer also runs while a request head trickles in.
            "keepalive_timeout": limits.client_idle_timeout_seconds,
        },
        client_max_size=0,
    )
    app[COMPONENTS] = LiveComponents(components)
    app[REQUEST_IDS] = RequestIds()
    app.router.add_route("*", "/{path:.*}", handle)
    return app


def bounds_of(limits: LimitSettings) -> Bounds:
    """The limiter's view of the ``limits:`` section."""
    return Bounds(
        requests_per_second=limits.requests_per_second_per_university,
        burst=limits.burst_per_university,
        in_flight_per_identity=limits.max_in_flight_per_identity,
        in_flight_per_university=limits.max_in_flight_per_university,
        long_running_per_identity=limits.max_long_running_per_identity,
        long_running_per_university=limits.max_long_running_per_university,
    )
