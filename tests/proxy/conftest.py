"""Fixtures for the forwarding core: a PKI, TLS upstreams, kubeconfigs, a proxy app.

The upstreams are small aiohttp applications standing in for the API server; they
speak real TLS with certificates made here, and the proxy under test reaches them
through ``Upstream`` exactly as it would reach kube-apiserver.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kproxy.auth.identity import UserInfo
from kproxy.config import LimitSettings
from kproxy.errors import KproxyError
from kproxy.proxy.errors import status_response
from kproxy.proxy.forwarding import forward
from kproxy.proxy.tunneling import is_upgrade, tunnel
from kproxy.proxy.upstream import Upstream, UpstreamSettings

DEFAULT_MAX_BODY_BYTES = LimitSettings().max_body_bytes
PROXY_USER = UserInfo(username="alice@uni.example", groups=("uni:staff",))


@dataclass(frozen=True)
class Pki:
    """A CA with a server certificate for 127.0.0.1 and a client certificate."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    usage: ExtendedKeyUsageOID | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True
        )
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if usage is ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _certificate("kproxy-test-ca", ca_key, None, ca_key)
    server_key, client_key = _key(), _key()
    server = _certificate(
        "apiserver", server_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client = _certificate(
        "kproxy", client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    paths = Pki(
        directory=directory,
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    _write_cert(ca, paths.ca)
    _write_cert(server, paths.server_cert)
    _write_key(server_key, paths.server_key)
    _write_cert(client, paths.client_cert)
    _write_key(client_key, paths.client_key)
    return paths


@dataclass
class Seen:
    """What an upstream received: one entry per request, as the handler saw it."""

    requests: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)

    @property
    def last(self) -> web.Request:
        return self.requests[-1]


@dataclass
class Served:
    url: str
    seen: Seen
    runner: web.AppRunner


ServeUpstream = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve_upstream(pki: Pki) -> AsyncIterator[ServeUpstream]:
    """Start an aiohttp app over TLS on an ephemeral port; return its URL and log."""
    runners: list[web.AppRunner] = []

    async def start(
        routes: Callable[[web.Application, Seen], None],
        *,
        require_client_cert: bool = False,
    ) -> Served:
        seen = Seen()
        app = web.Application()
        routes(app, seen)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(
            runner,
            "127.0.0.1",
            0,
            ssl_context=pki.server_context(require_client_cert=require_client_cert),
        )
        await site.start()
        port = runner.addresses[0][1]
        return Served(url=f"https://127.0.0.1:{port}", seen=seen, runner=runner)

    yield start
    for runner in runners:
        await runner.cleanup()


def write_kubeconfig(
    path: Path,
    server: str,
    pki: Pki,
    *,
    user: dict[str, Any] | None = None,
    cluster_extra: dict[str, Any] | None = None,
    inline_ca: bool = False,
) -> Path:
    """Write a kubeconfig with one context, ``test``, for ``server``."""
    cluster: dict[str, Any] = {"server": server}
    if inline_ca:
        cluster["certificate-authority-data"] = base64.b64encode(
            pki.ca.read_bytes()
        ).decode()
    else:
        cluster["certificate-authority"] = str(pki.ca)
    cluster.update(cluster_extra or {})
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "target", "cluster": cluster}],
        "users": [{"name": "kproxy", "user": user or {"token": "kproxy-static-token"}}],
        "contexts": [
            {"name": "test", "context": {"cluster": "target", "user": "kproxy"}}
        ],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
async def open_upstream(
    pki: Pki, tmp_path: Path
) -> AsyncIterator[Callable[..., Upstream]]:
    """Build ``Upstream`` objects for a server URL through a kubeconfig file."""
    made: list[Upstream] = []

    def make(
        server: str, *, user: dict[str, Any] | None = None, **settings: Any
    ) -> Upstream:
        kubeconfig = write_kubeconfig(
            tmp_path / f"kubeconfig-{len(made)}", server, pki, user=user
        )
        upstream = Upstream.from_settings(
            UpstreamSettings(kubeconfig=str(kubeconfig), **settings), base_dir=tmp_path
        )
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        await upstream.close()


@dataclass
class Proxy:
    url: str
    upstream: Upstream


ServeProxy = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def serve_proxy(pki: Pki) -> AsyncIterator[ServeProxy]:
    """Serve the forwarding core over TLS, impersonating ``PROXY_USER``."""
    runners: list[web.AppRunner] = []

    async def start(
        upstream: Upstream,
        *,
        user: UserInfo = PROXY_USER,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> Proxy:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                if is_upgrade(request):
                    return await tunnel(request, upstream, user)
                return await forward(
                    request, upstream, user, max_body_bytes=max_body_bytes
                )
            except KproxyError as exc:
                return status_response(exc)

        app = web.Application()
        app.router.add_route("*", "/{path:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
        await site.start()
        port = runner.addresses[0][1]
        return Proxy(url=f"https://127.0.0.1:{port}", upstream=upstream)

    yield start
    for runner in runners:
        await runner.cleanup()
