"""The API server kproxy forwards to, and kproxy's own credential for it.

The ``upstream:`` section names the API server either through a kubeconfig file and one
of its contexts, or as the cluster kproxy runs in (``inCluster: true``). Both are read
with the ``kubernetes`` package's own loaders, so a kubeconfig means here what it means
to kubectl; relative paths inside it are relative to the kubeconfig's directory.

kproxy's credential is a client certificate, a static token, or a token file. Token
files are projected service-account tokens that the kubelet rotates, so the file is
looked at again when it changes; to keep the request path free of a ``stat`` call per
request, it is looked at no more than once a second. A failed re-read keeps the last
good token. The CA bundle and client certificate files are watched the same way: when
one changes, new connections use a TLS context built from the new files, while pooled
connections finish on the old one; files that do not load keep the last good context.

Credentials that run programs (``exec``, ``auth-provider``) are refused: kproxy reads
its credential once at start and from files after that, never from a command.
``insecure-skip-tls-verify`` is refused too: kproxy sends every user's request with the
right to impersonate, and must know whom it talks to.

Transport failures are wrapped here, at the boundary, into ``UpstreamError`` (502),
``UpstreamUnavailableError`` (503: nobody answered) and ``UpstreamTimeoutError`` (504).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
from kubernetes.client import Configuration
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader
from kubernetes.config.kube_config import KubeConfigLoader
from multidict import CIMultiDict
from pydantic import Field, model_validator
from yarl import URL

from kproxy.configfile import Document, Model, load_document
from kproxy.errors import (
    ConfigError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_RECHECK_SECONDS: Final = 1.0

# Large reads keep the per-chunk overhead low on big lists and logs.
READ_BUFFER_BYTES: Final = 256 * 1024
# API server responses carry long Warning and audit headers.
MAX_RESPONSE_HEADER_BYTES: Final = 64 * 1024
# One watch event is one object; etcd bounds objects to about 1.5 MiB.
MAX_WATCH_EVENT_BYTES: Final = 16 * 1024 * 1024
MAX_JSON_BYTES: Final = 64 * 1024 * 1024

# The client's own headers are forwarded as they are; aiohttp must not add defaults.
SKIPPED_AUTO_HEADERS: Final = (
    "Accept",
    "Accept-Encoding",
    "User-Agent",
    "Content-Type",
)


class UpstreamSettings(Model):
    """The ``upstream:`` section: where the API server is and how kproxy reaches it."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    # Open connections at once, idle or busy; every open watch or log stream holds
    # one, and a request waits up to the connect timeout for a free one.
    pool_size: int = Field(default=512, ge=1, le=65536)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    # From sending a request until the answer's head arrives. Longer than the API
    # server's own 60 s request timeout, so its answer wins; streams have no limit
    # once their head has arrived.
    # The request body is sent within this time too. That costs no upload the API
    # server would take: its timeout for short requests also runs while it reads the
    # body, so it answers a slower upload (504) before this fires.
    response_header_timeout_seconds: float = Field(default=90.0, gt=0)
    idle_connection_timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> UpstreamSettings:
        if self.in_cluster == (self.kubeconfig is not None):
            raise ValueError("set exactly one of kubeconfig and inCluster")
        if self.in_cluster and self.context is not None:
            raise ValueError("context is only meaningful with kubeconfig")
        return self


class Credential(Protocol):
    """Where kproxy's ``Authorization`` value comes from, if it sends one."""

    def authorization(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CertificateOnly:
    """kproxy proves itself with its client certificate alone."""

    def authorization(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A credential written into the kubeconfig, as the whole header value."""

    value: str = field(repr=False)

    def authorization(self) -> str | None:
        return self.value


class TokenFile:
    """A bearer token read from a file that is replaced as the token rotates.

    The file is stat'ed at most once per ``recheck_seconds`` and read again only when
    its modification time, inode or size changed. The clock is passed in for tests.
    """

    __slots__ = ("_clock", "_next_check", "_path", "_recheck", "_stamp", "_value")

    def __init__(
        self,
        path: Path,
        *,
        recheck_seconds: float = TOKEN_RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._recheck = recheck_seconds
        self._clock = clock
        self._stamp: FileStamp = None
        self._value = ""
        if not self._refresh():
            raise ConfigError.single(str(path), "token file is missing or empty")
        self._next_check = clock() + recheck_seconds

    @property
    def path(self) -> Path:
        return self._path

    def authorization(self) -> str | None:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._recheck
            self._refresh()
        return self._value

    def _refresh(self) -> bool:
        try:
            stamp = _file_stamp(self._path)
            if stamp == self._stamp:
                return True
            token = self._path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning(
                "cannot read token file %s, keeping the last token: %s", self._path, exc
            )
            return False
        if not token:
            logger.warning("token file %s is empty, keeping the last token", self._path)
            return False
        self._stamp = stamp
        self._value = f"Bearer {token}"
        return True


FileStamp = tuple[int, int, int] | None


def _file_stamp(path: Path) -> FileStamp:
    """What changes when a file is rewritten or replaced; raises ``OSError``."""
    status = os.stat(path)
    return status.st_mtime_ns, status.st_ino, status.st_size


def _stamps(paths: tuple[Path, ...]) -> tuple[FileStamp, ...]:
    stamps: list[FileStamp] = []
    for path in paths:
        try:
            stamps.append(_file_stamp(path))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class ReloadingTLS:
    """The TLS context for the API server, rebuilt when the files it came from change.

    ``build`` makes a context from the files and raises ``ConfigError`` when they do
    not load; the first build happens here, so bad files stop kproxy at start.
    """

    __slots__ = (
        "_build",
        "_clock",
        "_context",
        "_next_check",
        "_paths",
        "_recheck",
        "_stamps",
    )

    def __init__(
        self,
        build: Callable[[], ssl.SSLContext],
        paths: tuple[Path, ...],
        *,
        recheck_seconds: float = TOKEN_RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build = build
        self._paths = paths
        self._recheck = recheck_seconds
        self._clock = clock
        self._stamps = _stamps(paths)
        self._context = build()
        self._next_check = clock() + recheck_seconds

    @property
    def build(self) -> Callable[[], ssl.SSLContext]:
        return self._build

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    def current(self) -> ssl.SSLContext:
        """The context for a new connection."""
        now = self._clock()
        if now < self._next_check:
            return self._context
        self._next_check = now + self._recheck
        stamps = _stamps(self._paths)
        if stamps == self._stamps:
            return self._context
        # Remember these files even if they fail to load, so that a broken pair is
        # reported once and tried again only when the files change again.
        self._stamps = stamps
        try:
            self._context = self._build()
        except ConfigError as exc:
            logger.warning("keeping the last upstream TLS settings: %s", exc)
        else:
            logger.info("upstream TLS files changed; new connections use them")
        return self._context


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """The API server's address, the TLS to reach it, and kproxy's credential."""

    server: URL
    tls: ReloadingTLS
    credential: Credential
    tls_server_name: str | None = None


def load_target(
    settings: UpstreamSettings,
    *,
    base_dir: Path,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> UpstreamTarget:
    """Read the API server's address and kproxy's credential as the settings say.

    ``service_account_dir`` and ``environ`` locate the in-cluster credential and
    address (``KUBERNETES_SERVICE_HOST``/``PORT``); tests point them elsewhere.
    Raises ``ConfigError`` naming the file, line and field of any problem.
    """
    if settings.in_cluster:
        return _in_cluster_target(service_account_dir, environ or os.environ)
    path = Path(settings.kubeconfig or "")
    return _kubeconfig_target(
        path if path.is_absolute() else base_dir / path, settings.context
    )


def _in_cluster_target(directory: Path, environ: Mapping[str, str]) -> UpstreamTarget:
    token_path = directory / "token"
    ca_path = directory / "ca.crt"
    configuration = Configuration()
    loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
        token_filename=str(token_path),
        cert_filename=str(ca_path),
        try_refresh_token=False,
        environ=environ,
    )
    try:
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        raise ConfigError.single(
            "in-cluster configuration", str(exc), field="upstream.inCluster"
        ) from exc
    return UpstreamTarget(
        server=_server_url(configuration.host, str(directory)),
        tls=_reloading_tls(configuration, str(ca_path)),
        credential=TokenFile(token_path),
    )


def _kubeconfig_target(path: Path, context: str | None) -> UpstreamTarget:
    document = load_document(path)
    user_location, user = _kubeconfig_user(document, context)
    _refuse_unsupported(document, user_location, user)
    configuration = Configuration()
    try:
        loader = KubeConfigLoader(  # type: ignore[no-untyped-call]
            config_dict=document.data,
            active_context=context,
            config_base_path=str(path.parent),
        )
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except (ConfigException, KeyError, TypeError, ValueError, OSError) as exc:
        raise ConfigError.single(str(path), f"cannot use kubeconfig: {exc}") from exc
    if configuration.verify_ssl is False:
        raise ConfigError(
            [document.problem((), "insecure-skip-tls-verify is not allowed")]
        )
    return UpstreamTarget(
        server=_server_url(configuration.host, str(path)),
        tls=_reloading_tls(configuration, str(path)),
        credential=_kubeconfig_credential(user, path.parent, configuration),
        tls_server_name=configuration.tls_server_name,
    )


def _kubeconfig_user(
    document: Document, context: str | None
) -> tuple[tuple[str | int, ...], Mapping[str, Any]]:
    data = document.data if isinstance(document.data, dict) else {}
    name = context or data.get("current-context")
    contexts = data.get("contexts") or []
    chosen = next(
        (c for c in contexts if isinstance(c, dict) and c.get("name") == name), None
    )
    if chosen is None:
        raise ConfigError(
            [document.problem(("contexts",), f"no context named {name!r}")]
        )
    user_name = (chosen.get("context") or {}).get("user")
    for index, entry in enumerate(data.get("users") or []):
        if isinstance(entry, dict) and entry.get("name") == user_name:
            return ("users", index, "user"), entry.get("user") or {}
    return ("users",), {}


def _refuse_unsupported(
    document: Document, location: tuple[str | int, ...], user: Mapping[str, Any]
) -> None:
    for key in ("exec", "auth-provider"):
        if key in user:
            message = f"{key} credentials are not supported: use a client certificate, token or tokenFile"
            raise ConfigError([document.problem((*location, key), message)])


def _kubeconfig_credential(
    user: Mapping[str, Any], base: Path, configuration: Configuration
) -> Credential:
    token_file = user.get("tokenFile")
    if token_file:
        path = Path(token_file)
        return TokenFile(path if path.is_absolute() else base / path)
    value = configuration.api_key.get("BearerToken") or configuration.api_key.get(
        "authorization"
    )
    if value:
        return StaticToken(str(value).strip())
    return CertificateOnly()


def _server_url(host: str, source: str) -> URL:
    url = URL(host, encoded=True)
    if url.scheme != "https" or not url.host:
        raise ConfigError.single(
            source, f"the API server must be an https URL, not {host!r}", field="server"
        )
    return url


def _reloading_tls(configuration: Configuration, source: str) -> ReloadingTLS:
    files = (
        configuration.ssl_ca_cert,
        configuration.cert_file,
        configuration.key_file,
    )
    return ReloadingTLS(
        lambda: _ssl_context(configuration, source),
        tuple(Path(name) for name in files if name),
    )


def _ssl_context(configuration: Configuration, source: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError.single(source, f"cannot load TLS material: {exc}") from exc
    return context


class Upstream:
    """The API server: a pool of keep-alive connections and kproxy's credential.

    Construct it inside the running event loop; ``close`` releases the pool.
    """

    def __init__(self, target: UpstreamTarget, settings: UpstreamSettings) -> None:
        self.target = target
        self.settings = settings
        self._base = str(target.server).rstrip("/")
        self._header_timeout = settings.response_header_timeout_seconds
        self._host = target.server.raw_host or ""
        connector = aiohttp.TCPConnector(
            limit=settings.pool_size,
            keepalive_timeout=settings.idle_connection_timeout_seconds,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=settings.connect_timeout_seconds,
                sock_connect=settings.connect_timeout_seconds,
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIPPED_AUTO_HEADERS,
            trust_env=False,
            read_bufsize=READ_BUFFER_BYTES,
            max_field_size=MAX_RESPONSE_HEADER_BYTES,
            max_line_size=MAX_RESPONSE_HEADER_BYTES,
            requote_redirect_url=False,
        )

    @classmethod
    def from_settings(cls, settings: UpstreamSettings, *, base_dir: Path) -> Upstream:
        """Load the target the settings name and open a pool for it."""
        return cls(load_target(settings, base_dir=base_dir), settings)

    def authorization(self) -> str | None:
        """Return kproxy's current ``Authorization`` value, or ``None`` for a cert."""
        return self.target.credential.authorization()

    def url(self, raw_path_qs: str) -> URL:
        """The API server URL for a raw, still-encoded path and query."""
        return URL(self._base + raw_path_qs, encoded=True)

    async def send(
        self,
        method: str,
        raw_path_qs: str,
        *,
        headers: CIMultiDict[str],
        data: Any = None,
    ) -> aiohttp.ClientResponse:
        """Send one request and return once the response head has arrived.

        The caller must ``release()`` the response. Redirects are never followed.
        Raises ``UpstreamError`` and its subclasses for transport failures, and
        ``UpstreamTimeoutError`` when no response head came in time.
        """
        try:
            async with asyncio.timeout(self._header_timeout):
                return await self.session.request(
                    method,
                    self.url(raw_path_qs),
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    ssl=self.target.tls.current(),
                    server_hostname=self.target.tls_server_name,
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise upstream_failure(exc, self._host) from exc

    async def open_connection(
        self, *, limit: int = READ_BUFFER_BYTES
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a dedicated TLS connection to the API server, outside the pool.

        Upgraded connections become tunnels and must never be reused for another
        request, so they never come from, or go back to, the pool.
        """
        server = self.target.server
        port = server.port or 443
        try:
            async with asyncio.timeout(self.settings.connect_timeout_seconds):
                return await asyncio.open_connection(
                    server.host,
                    port,
                    ssl=self.target.tls.current(),
                    server_hostname=self.target.tls_server_name or server.host,
                    limit=limit,
                )
        except (OSError, TimeoutError) as exc:
            raise upstream_failure(exc, self._host) from exc

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` as kproxy itself (no impersonation) and return the JSON object.

        Raises ``UpstreamError`` for a non-2xx answer or a body that is not a JSON
        object, with the API server's status and message.
        """
        async with self._own_request(path) as response:
            try:
                async with asyncio.timeout(self._header_timeout):
                    body = await response.content.read(MAX_JSON_BYTES + 1)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise upstream_failure(exc, self._host) from exc
        if len(body) > MAX_JSON_BYTES:
            raise UpstreamError(f"the answer to GET {path!r} is too large")
        return _json_object(body, path)

    async def watch_events(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """Yield the events of a watch on ``path`` as kproxy itself, one dict each.

        ``path`` carries its own ``watch=true``, ``resourceVersion`` and
        ``timeoutSeconds``. The stream ends when the API server ends it; close the
        iterator (``contextlib.aclosing``) to stop early and free the connection.
        ``ERROR`` events (such as 410 Gone) are yielded for the caller to act on.
        """
        async with self._own_request(path) as response:
            pending = bytearray()
            try:
                async for chunk in response.content.iter_any():
                    pending += chunk
                    for line in _complete_lines(pending, path):
                        yield _json_object(line, path)
            except (aiohttp.ClientError, OSError) as exc:
                raise upstream_failure(exc, self._host) from exc
            if pending.strip():
                yield _json_object(bytes(pending), path)

    @asynccontextmanager
    async def _own_request(self, path: str) -> AsyncIterator[aiohttp.ClientResponse]:
        headers: CIMultiDict[str] = CIMultiDict(Accept="application/json")
        authorization = self.authorization()
        if authorization is not None:
            headers["Authorization"] = authorization
        response = await self.send("GET", path, headers=headers)
        try:
            if response.status >= 300:
                raise await _refusal(response, path)
            yield response
        finally:
            response.release()

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.session.close()


def _complete_lines(pending: bytearray, path: str) -> list[bytes]:
    end = pending.rfind(b"\n")
    if end < 0:
        if len(pending) > MAX_WATCH_EVENT_BYTES:
            raise UpstreamError(f"a watch event from {path!r} is too large")
        return []
    lines = [line for line in bytes(pending[:end]).split(b"\n") if line.strip()]
    del pending[: end + 1]
    return lines


def _json_object(body: bytes, path: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise UpstreamError(f"the answer to GET {path!r} is not JSON") from exc
    if not isinstance(value, dict):
        raise UpstreamError(f"the answer to GET {path!r} is not a JSON object")
    return value


async def _refusal(response: aiohttp.ClientResponse, path: str) -> UpstreamError:
    message = ""
    try:
        body = await response.content.read(64 * 1024)
        message = str(json.loads(body).get("message", ""))
    except (aiohttp.ClientError, OSError, ValueError, AttributeError):
        pass
    detail = f": {message}" if message else ""
    return UpstreamError(f"GET {path!r} answered {response.status}{detail}")


def upstream_failure(exc: BaseException, host: str) -> UpstreamError:
    """Translate a transport exception into the error the client should see."""
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError, aiohttp.ClientSSLError)):
        return UpstreamError(f"TLS with the API server {host!r} failed")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"the API server {host!r} did not answer in time")
    if _never_connected(exc):
        return UpstreamUnavailableError(f"cannot connect to the API server {host!r}")
    return UpstreamError(f"the connection to the API server {host!r} failed")


def _never_connected(exc: BaseException) -> bool:
    # aiohttp's connection errors are OSErrors too; only its connector's mean that
    # no connection was made. Plain OSErrors come from opening a tunnel connection.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError)
