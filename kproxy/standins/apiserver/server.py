"""The stand-in's HTTP side: TLS, authentication, impersonation, authorization, routing.

The filter chain is kube-apiserver's (``staging/src/k8s.io/apiserver/pkg/server/
config.go``, ``DefaultBuildHandlerChain``), in its order: authenticate
(``filters/authentication.go``: a client certificate signed by the CA, else a bearer
token; anonymous requests are refused with 401 as with ``--anonymous-auth=false``),
impersonate (``impersonation.py``), authorize (``filters/authorization.go`` with
``rbac.py``), then serve. What each request carried and who it acted as is recorded
before authorization, so tests can see exactly what reached the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from kproxy.auth.identity import UserInfo

from . import (
    catalog,
    discovery,
    impersonation,
    resources,
    routing,
    statuses,
    streaming,
    watching,
)
from .certificates import CertificateAuthority, KeyPair
from .faults import Faults
from .podlogs import PodLogs
from .rbac import Attributes, Binding, default_bindings, forbidden_detail, is_allowed
from .store import Object, Store

logger = logging.getLogger(__name__)

_STREAMING = ("log", "exec", "attach", "portforward")
_HEALTH = ("/healthz", "/livez", "/readyz")


@dataclass(frozen=True, slots=True)
class Credentials:
    """How one client authenticates: a bearer token and a client certificate."""

    username: str
    token: str
    client_certificate: KeyPair


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """What one request carried and who it ended up acting as."""

    method: str
    path: str
    query_string: str
    headers: tuple[tuple[str, str], ...]
    caller: UserInfo | None
    user: UserInfo | None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class ApiServer:
    """An in-process kube-apiserver stand-in, served over TLS on an ephemeral port.

    ``bindings`` are the RBAC grants (by default: discovery for every authenticated
    user, everything for ``system:masters``, impersonation for the proxy user).
    ``proxy_credentials`` are what kproxy must use upstream.
    """

    def __init__(
        self,
        *,
        bindings: tuple[Binding, ...] | None = None,
        proxy_username: str = "kproxy",
        host: str = "127.0.0.1",
        bookmark_interval: float = 5.0,
        history_size: int = 1000,
    ) -> None:
        self.ca = CertificateAuthority()
        self.store = Store(history_size=history_size)
        self.logs = PodLogs()
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.bindings = (
            default_bindings(proxy_username) if bindings is None else bindings
        )
        self.bookmark_interval = bookmark_interval
        self._host = host
        self._tokens: dict[str, UserInfo] = {}
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._stopping = asyncio.Event()
        self._transports: set[asyncio.Transport] = set()
        self.store.deleted_callbacks.append(self._on_deleted)
        self.proxy_credentials = self.add_user(UserInfo(username=proxy_username))

    @property
    def url(self) -> str:
        return f"https://{self._host}:{self._port}"

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    def add_user(self, user: UserInfo) -> Credentials:
        """Create credentials (a token and a client certificate) for a user."""
        token = secrets.token_urlsafe(24)
        self._tokens[token] = user
        groups = tuple(g for g in user.groups if g != "system:authenticated")
        return Credentials(
            user.username, token, self.ca.issue_client(user.username, groups)
        )

    def grant(self, *bindings: Binding) -> None:
        """Add RBAC bindings to the ones in force."""
        self.bindings = (*self.bindings, *bindings)

    def append_log(
        self, namespace: str, pod: str, text: str, container: str = ""
    ) -> None:
        """Append to a container's log (the pod's only container when not named)."""
        resource = catalog.find("", "v1", "pods")
        assert resource is not None  # noqa: S101
        found = self.store.get(resource, namespace, pod)
        self.logs.append(
            (namespace, pod, streaming.container_of(found, container)), text
        )

    def create(self, obj: Object) -> Object:
        """Create an object directly in the store, by its ``apiVersion`` and ``kind``."""
        resource = _resource_of(obj)
        namespace = obj.get("metadata", {}).get("namespace", "default")
        return self.store.create(
            resource, namespace if resource.namespaced else "", obj
        )

    def clear_requests(self) -> None:
        self.requests.clear()

    def kubeconfig(
        self, credentials: Credentials, *, use_certificate: bool = False
    ) -> dict[str, Any]:
        """A kubeconfig for these credentials, as a dict ready for ``yaml.safe_dump``."""
        import base64

        user: dict[str, str] = {"token": credentials.token}
        if use_certificate:
            user = {
                "client-certificate-data": base64.b64encode(
                    credentials.client_certificate.cert_pem
                ).decode(),
                "client-key-data": base64.b64encode(
                    credentials.client_certificate.key_pem
                ).decode(),
            }
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "standin",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(
                            self.ca_pem
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": credentials.username, "user": user}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {
                        "cluster": "standin",
                        "user": credentials.username,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "standin",
        }

    async def start(self) -> None:
        """Listen on an ephemeral port over TLS."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        # A client that leaves ends its watch or log stream at once, as it does in
        # kube-apiserver, rather than at the next bookmark or at shutdown.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0, ssl_context=self._ssl_context())
        await site.start()
        # TCPSite keeps its asyncio.Server private; it is the only way to the port.
        server = site._server
        assert isinstance(server, asyncio.Server)  # noqa: S101
        self._port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stopping.set()
        for key in list(self.logs._buffers):
            self.logs.end_pod(key[0], key[1])
        if self._runner is None:
            return
        server = self._runner.server
        if server is not None:
            self._transports.update(
                h.transport for h in server.connections if h.transport is not None
            )
        await self._runner.cleanup()
        # A client that drops a TLS connection without close_notify leaves its
        # transport waiting for a shutdown that never comes; end those now.
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    def _ssl_context(self) -> ssl.SSLContext:
        serving = self.ca.issue_server(("localhost", self._host))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as directory:
            cert, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
            cert.write_bytes(serving.cert_pem)
            key.write_bytes(serving.key_pem)
            context.load_cert_chain(cert, key)
        context.load_verify_locations(cadata=self.ca_pem.decode())
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._track(request.transport)
        try:
            return await self._serve(request)
        except statuses.ApiError as error:
            return resources.respond(error.status, error.code)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        caller: UserInfo | None = None
        user: UserInfo | None = None
        try:
            caller = self._authenticate(request)
            user = impersonation.impersonate(
                request.headers.items(), caller, self._allows
            )
        finally:
            self._record(request, caller, user)
        fault = await self._fault(request)
        if fault is not None:
            return fault
        target = routing.parse(request.method, request.path, request.query)
        self._authorize(target, user)
        return await self._dispatch(request, target, user)

    def _track(self, transport: asyncio.Transport | None) -> None:
        if transport is None or transport in self._transports:
            return
        if len(self._transports) > 1024:
            for done in [t for t in self._transports if t.is_closing()]:
                done.abort()
                self._transports.discard(done)
        self._transports.add(transport)

    def _authenticate(self, request: web.Request) -> UserInfo:
        certificate = (
            request.transport.get_extra_info("peercert") if request.transport else None
        )
        if certificate:
            return _certificate_user(certificate)
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        user = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise statuses.unauthorized()
        return _authenticated(user)

    def _allows(self, attributes: Attributes) -> bool:
        return is_allowed(self.bindings, attributes)

    def _authorize(self, target: routing.Target, user: UserInfo) -> None:
        attributes = Attributes(
            user=user,
            verb=target.verb,
            resource_request=target.is_resource_request,
            path=target.path,
            api_group=target.api_group,
            api_version=target.api_version,
            namespace=target.namespace,
            resource=target.plural,
            subresource=target.subresource,
            name=target.name,
        )
        if self._allows(attributes):
            return
        detail = forbidden_detail(attributes)
        if not target.is_resource_request:
            raise statuses.forbidden("", "", "", detail)
        raise statuses.forbidden(target.plural, target.api_group, target.name, detail)

    def _record(
        self, request: web.Request, caller: UserInfo | None, user: UserInfo | None
    ) -> None:
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query_string=request.query_string,
                headers=tuple(request.headers.items()),
                caller=caller,
                user=user,
            )
        )

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        faults = self.faults
        if not faults.applies_to(request.path):
            return None
        # The switch is a plain field a test flips, so it is polled, boundedly.
        while faults.hang and not self._stopping.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if faults.status_code is not None:
            raise statuses.server_error(
                faults.status_code, "fault injected by the test"
            )
        if faults.redirect_to is not None:
            return web.Response(status=302, headers={"Location": faults.redirect_to})
        return None

    async def _dispatch(
        self, request: web.Request, target: routing.Target, user: UserInfo
    ) -> web.StreamResponse:
        if not target.is_resource_request:
            return self._non_resource(request, target)
        if target.resource is None:
            raise _no_such_path()
        if target.subresource in _STREAMING and target.resource.kind == "Pod":
            return await streaming.serve(
                request,
                target,
                store=self.store,
                logs=self.logs,
                faults=self.faults,
                user=user,
            )
        if target.verb == "watch":
            return await watching.watch(
                self.store,
                request,
                target,
                faults=self.faults,
                bookmark_interval=self.bookmark_interval,
            )
        return await resources.handle(self.store, request, target)

    def _non_resource(
        self, request: web.Request, target: routing.Target
    ) -> web.StreamResponse:
        path = target.path.rstrip("/") or "/"
        if path.startswith(_HEALTH):
            return web.Response(text="ok", content_type="text/plain")
        body = self._document(request, path)
        if body is None:
            raise _no_such_path()
        return resources.respond(body)

    def _document(self, request: web.Request, path: str) -> dict[str, Any] | None:
        parts = path.strip("/").split("/")
        if path == "/version":
            return discovery.version()
        if path == "/api":
            return discovery.api_versions(f"{self._host}:{self._port}")
        if path == "/api/v1":
            return discovery.api_resource_list("", "v1")
        if path == "/apis":
            return discovery.api_group_list()
        served = catalog.group_versions()
        if parts[0] == "apis" and len(parts) == 2 and parts[1] in served:
            return discovery.api_group(parts[1])
        if (
            parts[0] == "apis"
            and len(parts) == 3
            and parts[2] in served.get(parts[1], [])
        ):
            return discovery.api_resource_list(parts[1], parts[2])
        return self._openapi(request, parts)

    def _openapi(self, request: web.Request, parts: list[str]) -> dict[str, Any] | None:
        if parts[:2] == ["openapi", "v2"]:
            accept = request.headers.get("Accept", "*/*")
            if "json" not in accept and "*/*" not in accept:
                raise statuses.ApiError(
                    statuses.status_object(
                        406, "NotAcceptable", "only application/json is served"
                    )
                )
            return discovery.openapi_v2_document()
        if parts[:2] != ["openapi", "v3"]:
            return None
        if len(parts) == 2:
            return discovery.openapi_v3_root()
        if parts[2] == "api" and len(parts) == 4:
            return discovery.openapi_v3_document("", parts[3])
        if parts[2] == "apis" and len(parts) == 5:
            return discovery.openapi_v3_document(parts[3], parts[4])
        return None

    def _on_deleted(self, resource: catalog.ResourceType, obj: Object) -> None:
        if resource.kind == "Pod":
            metadata = obj["metadata"]
            self.logs.end_pod(metadata["namespace"], metadata["name"])


@contextlib.asynccontextmanager
async def running_apiserver(**options: Any) -> AsyncIterator[ApiServer]:
    """Start an ``ApiServer`` for the duration of a ``async with`` block."""
    server = ApiServer(**options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _authenticated(user: UserInfo) -> UserInfo:
    if "system:authenticated" in user.groups:
        return user
    return UserInfo(
        user.username, user.uid, (*user.groups, "system:authenticated"), user.extra
    )


def _certificate_user(certificate: dict[str, Any]) -> UserInfo:
    names = [pair for rdn in certificate.get("subject", ()) for pair in rdn]
    username = next((v for k, v in names if k == "commonName"), "")
    groups = tuple(v for k, v in names if k == "organizationName")
    return _authenticated(UserInfo(username=username, groups=groups))


def _resource_of(obj: Object) -> catalog.ResourceType:
    api_version = obj.get("apiVersion", "v1")
    group, _, version = api_version.rpartition("/")
    for resource in catalog.RESOURCES:
        if (resource.group, resource.version, resource.kind) == (
            group,
            version,
            obj.get("kind"),
        ):
            return resource
    raise ValueError(f"the stand-in does not serve {api_version} {obj.get('kind')}")


def _no_such_path() -> statuses.ApiError:
    error = statuses.ApiError(
        statuses.status_object(
            404, "NotFound", "the server could not find the requested resource"
        )
    )
    error.status["details"] = {}
    return error
