"""A whole kproxy under attack: issuers, the API server stand-in and the running proxy.

Everything speaks real TLS with certificates from one throw-away authority: kproxy's
own listener, the issuers' discovery and key endpoints, and the API server. Two
universities, alpha and beta, each own one source cluster's issuer; a third issuer,
``stray``, is trusted by the authentication section but claimed by no university.

The API server stand-in grants the universities' schedulers everything, so that it is
kproxy alone that stands between a hostile client and the cluster: each security test
asserts, at the stand-in's recorded requests, that nothing forbidden arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml
from aiohttp import web

from kproxy.app import bounds_of, build_app
from kproxy.config import LimitSettings, load_configuration
from kproxy.limiting import Limiter
from kproxy.running import Proxy
from kproxy.standins.apiserver import ApiServer, Binding, PolicyRule, RecordedRequest
from kproxy.standins.apiserver.certificates import CertificateAuthority
from kproxy.standins.issuer import Fault, IssuerStandin, SigningKey

AUDIENCE: Final = "https://kproxy.target.example"
NAMESPACE: Final = {"alpha": "alpha", "beta": "beta"}
POD: Final = "worker"
SCHEDULER_NAMESPACE: Final = "admiralty"


def policy(university: str) -> dict[str, Any]:
    """A university's file: its scheduler may work in its own namespace only."""
    return {
        "apiVersion": "kproxy.io/v1alpha1",
        "kind": "UniversityPolicy",
        "metadata": {"name": university},
        "identities": [
            {
                "name": "scheduler",
                "issuer": "cluster",
                "serviceAccount": {"namespace": SCHEDULER_NAMESPACE, "name": "*"},
                "user": {"username": "{serviceAccountName}"},
            }
        ],
        "rules": [
            {
                "name": "work",
                "namespaces": [NAMESPACE[university]],
                "apiGroups": [""],
                "resources": [
                    "pods",
                    "pods/log",
                    "pods/exec",
                    "pods/attach",
                    "configmaps",
                ],
                "verbs": [
                    "get",
                    "list",
                    "watch",
                    "create",
                    "update",
                    "patch",
                    "delete",
                ],
            }
        ],
        "clusterRules": [
            {
                "name": "discovery",
                "nonResourceURLs": ["/version", "/api", "/api/*", "/apis", "/apis/*"],
                "verbs": ["get"],
            }
        ],
    }


@dataclass(frozen=True, slots=True)
class Keys:
    """Signing keys made once per test process: RSA generation is the slow part."""

    alpha: SigningKey
    beta: SigningKey
    stray: SigningKey
    spare: SigningKey

    @classmethod
    def generate(cls) -> Keys:
        return cls(*(SigningKey.generate("RS256") for _ in range(4)))


@dataclass
class Federation:
    """A running federation; ``await start()``, then ``await stop()``."""

    directory: Path
    keys: Keys
    limits: Mapping[str, Any] = field(default_factory=dict)
    authentication: Mapping[str, Any] = field(default_factory=dict)
    jwt_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    issuer_faults: Mapping[str, Fault] = field(default_factory=dict)
    upstream: Mapping[str, Any] = field(default_factory=dict)
    relay: Relay | None = None
    authority: CertificateAuthority = field(default_factory=CertificateAuthority)
    apiserver: ApiServer = field(default_factory=ApiServer)
    issuers: dict[str, IssuerStandin] = field(default_factory=dict)
    proxy: Proxy | None = None
    url: str = ""
    _limited: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        await self.apiserver.start()
        if self.relay is not None:
            await self.relay.start(self.apiserver.url)
        self._populate()
        for name in ("alpha", "beta", "stray"):
            self.issuers[name] = await self._issuer(getattr(self.keys, name))
            self.issuers[name].fault = self.issuer_faults.get(name)
        await self.start_proxy()

    async def start_proxy(self) -> None:
        self.proxy = Proxy(load_configuration(self._write_configuration()))
        await self.proxy.start()
        self.url = self.proxy.addresses[0]
        if self.limits:
            await self._serve_with_limits()

    async def _serve_with_limits(self) -> None:
        # The same components are served here under the test's own ``limits:``
        # section, so each test chooses its bounds without a new federation.
        assert self.proxy is not None
        limits = LimitSettings.model_validate(self.limits)
        components = dataclasses.replace(
            self.proxy.components,
            limiter=Limiter(bounds_of(limits)),
            max_body_bytes=limits.max_body_bytes,
        )
        app = build_app(components, limits=limits)
        self._limited = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._limited.setup()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.directory / "tls.crt", self.directory / "tls.key")
        site = web.TCPSite(self._limited, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        self.url = f"https://127.0.0.1:{self._limited.addresses[0][1]}"

    async def stop(self) -> None:
        if self._limited is not None:
            await self._limited.cleanup()
        if self.proxy is not None:
            await self.proxy.stop()
        for issuer in self.issuers.values():
            await issuer.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.apiserver.stop()

    @property
    def alpha(self) -> IssuerStandin:
        return self.issuers["alpha"]

    @property
    def beta(self) -> IssuerStandin:
        return self.issuers["beta"]

    @property
    def stray(self) -> IssuerStandin:
        return self.issuers["stray"]

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("https://").rpartition(":")
        return host, int(port)

    def client_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.authority.cert_pem.decode())

    def token(self, university: str = "alpha", **claims: Any) -> str:
        """A good service-account token of a university's scheduler."""
        issuer = self.issuers[university]
        return issuer.mint_service_account(
            audience=AUDIENCE,
            namespace=SCHEDULER_NAMESPACE,
            name="scheduler",
            extra_claims=claims or None,
        )

    def session(self, **options: Any) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self.client_tls())
        return aiohttp.ClientSession(self.url, connector=connector, **options)

    def forwarded(self) -> list[RecordedRequest]:
        """Requests that reached the API server on a client's behalf (impersonated)."""
        return [
            r for r in self.apiserver.requests if r.header_values("Impersonate-User")
        ]

    async def _issuer(self, key: SigningKey) -> IssuerStandin:
        serving = self.authority.issue_server(("127.0.0.1", "localhost"))
        issuer = IssuerStandin(
            ssl_context=_server_context(self.directory, serving),
            algorithms=("RS256",),
            keys=[key],
            published=[key],
            slow_seconds=30.0,
        )
        await issuer.start()
        return issuer

    def _populate(self) -> None:
        scheduler_rules = (
            PolicyRule(verbs=("*",), api_groups=("*",), resources=("*",)),
            PolicyRule(verbs=("*",), non_resource_urls=("*",)),
        )
        self.apiserver.grant(
            Binding(rules=scheduler_rules, groups=("alpha:scheduler", "beta:scheduler"))
        )
        for namespace in ("alpha", "beta"):
            self.apiserver.create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": namespace},
                }
            )
        for namespace in ("alpha", "beta", "kube-system"):
            self.apiserver.create(pod(namespace))
            self.apiserver.append_log(namespace, POD, "started\n")

    def _write_configuration(self) -> Path:
        directory = self.directory
        (directory / "policies").mkdir(exist_ok=True)
        for university in ("alpha", "beta"):
            text = yaml.safe_dump(policy(university), sort_keys=False)
            (directory / "policies" / f"{university}.yaml").write_text(text)
        kubeconfig = directory / "kubeconfig"
        credentials = self.apiserver.proxy_credentials
        document = self.apiserver.kubeconfig(credentials)
        if self.relay is not None:
            document["clusters"][0]["cluster"]["server"] = self.relay.url
        kubeconfig.write_text(yaml.safe_dump(document))
        serving = self.authority.issue_server(("127.0.0.1", "localhost"))
        (directory / "tls.crt").write_bytes(serving.cert_pem)
        (directory / "tls.key").write_bytes(serving.key_pem)
        path = directory / "kproxy.yaml"
        path.write_text(json.dumps(self._configuration(), indent=1))
        return path

    def _configuration(self) -> dict[str, Any]:
        return {
            "apiVersion": "kproxy.io/v1alpha1",
            "kind": "ProxyConfiguration",
            "serving": {
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"certFile": "tls.crt", "keyFile": "tls.key"},
                "probes": {"address": "127.0.0.1", "port": 0},
                "shutdownGracePeriodSeconds": 1,
            },
            "upstream": {
                "kubeconfig": "kubeconfig",
                "responseHeaderTimeoutSeconds": 5,
                **self.upstream,
            },
            "authentication": {
                "jwt": [self._jwt(name) for name in ("alpha", "beta", "stray")],
                "fetchTimeoutSeconds": 2,
                "keyRetrySeconds": 1,
                **self.authentication,
            },
            "federation": {
                "policyDirectory": "policies",
                "universities": {
                    name: {
                        "issuers": {"cluster": self.issuers[name].url},
                        "usernamePrefix": f"{name}:",
                        "groupPrefix": f"{name}:",
                    }
                    for name in ("alpha", "beta")
                },
            },
            "limits": dict(self.limits),
            "audit": {"path": str(self.directory / "audit.log"), "level": "Metadata"},
            "logging": {"level": "warning"},
        }

    def _jwt(self, name: str) -> dict[str, Any]:
        return {
            "issuer": {
                "url": self.issuers[name].url,
                "audiences": [AUDIENCE],
                "certificateAuthority": self.authority.cert_pem.decode(),
            },
            "claimMappings": {"username": {"claim": "sub", "prefix": f"{name}:"}},
            **self.jwt_options.get(name, {}),
        }


def pod(namespace: str, name: str = POD) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def _server_context(directory: Path, pair: Any) -> ssl.SSLContext:
    cert, key = directory / "issuer-tls.crt", directory / "issuer-tls.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What came back on a raw connection: every status line, and the first answer."""

    statuses: tuple[int, ...]
    head: str
    body: bytes

    @property
    def status(self) -> int:
        return self.statuses[0] if self.statuses else 0

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_exchange(
    federation: Federation, data: bytes, *, read_timeout: float = 10.0
) -> RawResponse:
    """Write bytes on a fresh TLS connection to kproxy and read until it closes.

    Used for what an HTTP library would refuse to send: smuggling attempts, odd
    paths, repeated or folded headers. Every response on the connection is counted,
    so a second request hidden in the first is seen if kproxy answered it.
    """
    host, port = federation.host_port
    reader, writer = await asyncio.open_connection(
        host, port, ssl=federation.client_tls(), server_hostname="127.0.0.1"
    )
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            received = await _read_all(reader)
    finally:
        writer.close()
    return _parse(received)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except (ConnectionResetError, ssl.SSLError):
        pass
    return b"".join(chunks)


def _parse(received: bytes) -> RawResponse:
    answers = []
    rest = received
    while rest.startswith(b"HTTP/1."):
        head, body, rest = _one_answer(rest)
        answers.append((head, body))
    if not answers:
        return RawResponse(statuses=(), head="", body=received)
    statuses = tuple(int(head.split(" ", 2)[1]) for head, _ in answers)
    return RawResponse(statuses=statuses, head=answers[0][0], body=answers[0][1])


def _one_answer(data: bytes) -> tuple[str, bytes, bytes]:
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    head = raw_head.decode("latin-1")
    fields = [line.partition(":") for line in head.split("\r\n")[1:]]
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    if "chunked" in headers.get("transfer-encoding", ""):
        return (head, *_unchunk(rest))
    if "content-length" in headers:
        length = int(headers["content-length"])
        return head, rest[:length], rest[length:]
    return head, rest, b""


def _unchunk(data: bytes) -> tuple[bytes, bytes]:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            return bytes(out), data.partition(b"\r\n")[2]
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out), b""


def request_bytes(
    method: str,
    target: str,
    *,
    token: str,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    close: bool = True,
) -> bytes:
    """One HTTP/1.1 request as bytes, written exactly as given."""
    lines = [f"{method} {target} HTTP/1.1", "Host: kproxy"]
    lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


class Relay:
    """A TCP relay in front of a server, which a test can make refuse or redirect.

    ``refuse()`` closes the listening socket, so connections are refused as by a
    server that is down; ``accept()`` listens on the same port again. ``target``
    may be switched to another server (one with a certificate the client does not
    expect) and back.
    """

    def __init__(self) -> None:
        self.port = 0
        self.target = ""
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self, target: str) -> None:
        self.target = target
        await self.accept()

    async def accept(self) -> None:
        self._server = await asyncio.start_server(
            self._connected, "127.0.0.1", self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stop listening and cut every relayed connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def stop(self) -> None:
        await self.refuse()

    async def _connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, _, port = self.target.removeprefix("https://").rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer), name="relay-up"),
            asyncio.create_task(_pipe(up_reader, writer), name="relay-down"),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            writer.close()
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
