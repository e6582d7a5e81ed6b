"""The upstream section: kubeconfig and in-cluster loading, credentials, own requests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.x509.oid import ExtendedKeyUsageOID

from kproxy.configfile import parse_document, validate
from kproxy.errors import ConfigError, UpstreamError
from kproxy.proxy.upstream import (
    CertificateOnly,
    ReloadingTLS,
    StaticToken,
    TokenFile,
    Upstream,
    UpstreamSettings,
    load_target,
)
from tests.proxy.conftest import (
    Pki,
    Seen,
    ServeUpstream,
    _certificate,
    _key,
    _write_cert,
    _write_key,
    write_kubeconfig,
)


def settings_for(kubeconfig: Path, **more: Any) -> UpstreamSettings:
    return UpstreamSettings(kubeconfig=str(kubeconfig), **more)


def record_routes(app: web.Application, seen: Seen) -> None:
    async def record(request: web.Request) -> web.Response:
        seen.requests.append(request)
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})

    app.router.add_get("/{path:.*}", record)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kubeconfig: a\ninCluster: true\n", "exactly one of kubeconfig and inCluster"),
        ("{}\n", "exactly one of kubeconfig and inCluster"),
        ("inCluster: true\ncontext: x\n", "context is only meaningful"),
        ("kubeconfig: a\npoolSize: 0\n", "greater than or equal to 1"),
        ("kubeconfig: a\ntimeout: 3\n", "unknown field"),
    ],
    ids=["both", "neither", "context-in-cluster", "pool-size", "unknown-field"],
)
def test_bad_upstream_sections_name_the_problem(text: str, message: str) -> None:
    document = parse_document(text, "kproxy.yaml")

    with pytest.raises(ConfigError) as caught:
        validate(document, UpstreamSettings)

    assert message in str(caught.value)
    assert "kproxy.yaml" in str(caught.value)


def test_settings_read_camel_case_fields() -> None:
    document = parse_document(
        "kubeconfig: k\ncontext: c\npoolSize: 8\nconnectTimeoutSeconds: 2\n"
        "responseHeaderTimeoutSeconds: 30\n",
        "kproxy.yaml",
    )

    settings = validate(document, UpstreamSettings)

    assert (settings.pool_size, settings.connect_timeout_seconds) == (8, 2.0)
    assert settings.response_header_timeout_seconds == 30.0


async def test_client_certificate_from_kubeconfig_is_presented(
    serve_upstream: ServeUpstream, pki: Pki, tmp_path: Path
) -> None:
    served = await serve_upstream(record_routes, require_client_cert=True)
    user = {"client-certificate": "client.crt", "client-key": "client.key"}
    kubeconfig = write_kubeconfig(
        pki.directory / "kubeconfig", served.url, pki, user=user
    )
    upstream = Upstream.from_settings(settings_for(kubeconfig), base_dir=tmp_path)

    try:
        answer = await upstream.get_json("/api")
    finally:
        await upstream.close()

    assert answer["kind"] == "APIVersions"
    assert isinstance(upstream.target.credential, CertificateOnly)
    assert "Authorization" not in served.seen.last.headers


async def test_a_server_requiring_a_certificate_refuses_kproxy_without_one(
    serve_upstream: ServeUpstream, open_upstream: Callable[..., Upstream]
) -> None:
    served = await serve_upstream(record_routes, require_client_cert=True)
    upstream = open_upstream(served.url)

    with pytest.raises(UpstreamError):
        await upstream.get_json("/api")


async def test_static_token_and_inline_ca_from_kubeconfig(
    serve_upstream: ServeUpstream, pki: Pki, tmp_path: Path
) -> None:
    served = await serve_upstream(record_routes)
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", served.url, pki, inline_ca=True
    )
    upstream = Upstream.from_settings(settings_for(kubeconfig), base_dir=tmp_path)

    try:
        await upstream.get_json("/api")
    finally:
        await upstream.close()

    assert isinstance(upstream.target.credential, StaticToken)
    headers = served.seen.last.headers
    assert headers["Authorization"] == "Bearer kproxy-static-token"
    assert not any(name.lower().startswith("impersonate") for name in headers)


async def test_an_untrusted_server_certificate_is_refused(
    serve_upstream: ServeUpstream, pki: Pki, tmp_path: Path
) -> None:
    served = await serve_upstream(record_routes)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", served.url, pki)
    text = kubeconfig.read_text().replace(
        str(pki.ca), "/etc/ssl/certs/ca-certificates.crt"
    )
    kubeconfig.write_text(text)
    upstream = Upstream.from_settings(settings_for(kubeconfig), base_dir=tmp_path)

    try:
        with pytest.raises(UpstreamError, match="TLS"):
            await upstream.get_json("/api")
    finally:
        await upstream.close()


def test_kubeconfig_path_is_relative_to_the_configuration_directory(
    pki: Pki, tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    write_kubeconfig(
        tmp_path / "conf" / "target.kubeconfig", "https://127.0.0.1:6443", pki
    )

    target = load_target(
        UpstreamSettings(kubeconfig="target.kubeconfig"), base_dir=tmp_path / "conf"
    )

    assert str(target.server) == "https://127.0.0.1:6443"


def test_token_file_in_kubeconfig_is_relative_to_the_kubeconfig(
    pki: Pki, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("first-token\n")
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        "https://127.0.0.1:6443",
        pki,
        user={"tokenFile": "token"},
    )

    target = load_target(settings_for(kubeconfig), base_dir=Path("/nonexistent"))

    assert isinstance(target.credential, TokenFile)
    assert target.credential.authorization() == "Bearer first-token"


@pytest.mark.parametrize(
    ("user", "cluster", "message"),
    [
        ({"exec": {"command": "true", "apiVersion": "v1"}}, {}, "exec credentials"),
        ({"auth-provider": {"name": "oidc"}}, {}, "auth-provider credentials"),
        (
            {"token": "t"},
            {"insecure-skip-tls-verify": True},
            "insecure-skip-tls-verify",
        ),
        ({"tokenFile": "missing-token"}, {}, "cannot use kubeconfig"),
    ],
    ids=["exec", "auth-provider", "insecure", "missing-token-file"],
)
def test_unsupported_kubeconfigs_are_refused_with_their_file(
    user: dict[str, Any],
    cluster: dict[str, Any],
    message: str,
    pki: Pki,
    tmp_path: Path,
) -> None:
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        "https://127.0.0.1:6443",
        pki,
        user=user,
        cluster_extra=cluster,
    )

    with pytest.raises(ConfigError) as caught:
        load_target(settings_for(kubeconfig), base_dir=tmp_path)

    assert message in str(caught.value)
    assert str(kubeconfig) in str(caught.value)


def test_exec_refusal_names_the_line(pki: Pki, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        "https://127.0.0.1:6443",
        pki,
        user={"exec": {"command": "x"}},
    )
    exec_line = next(
        number
        for number, line in enumerate(kubeconfig.read_text().splitlines(), start=1)
        if line.strip().startswith("exec:")
    )

    with pytest.raises(ConfigError) as caught:
        load_target(settings_for(kubeconfig), base_dir=tmp_path)

    # The problem points at the exec block: its key or the first line of its value.
    assert caught.value.problems[0].line in {exec_line, exec_line + 1}
    assert caught.value.problems[0].field == "users[0].user.exec"


def test_plain_http_servers_and_unknown_contexts_are_refused(
    pki: Pki, tmp_path: Path
) -> None:
    plain = write_kubeconfig(tmp_path / "plain", "http://127.0.0.1:8080", pki)
    fine = write_kubeconfig(tmp_path / "fine", "https://127.0.0.1:6443", pki)

    with pytest.raises(ConfigError, match="https URL"):
        load_target(settings_for(plain), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="no context named 'other'"):
        load_target(settings_for(fine, context="other"), base_dir=tmp_path)


def test_in_cluster_target_reads_the_service_account(pki: Pki, tmp_path: Path) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("projected-token")
    (account / "ca.crt").write_bytes(pki.ca.read_bytes())
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}

    target = load_target(
        UpstreamSettings(inCluster=True),
        base_dir=tmp_path,
        service_account_dir=account,
        environ=environ,
    )

    assert (target.server.host, target.server.port) == ("10.96.0.1", 443)
    assert target.credential.authorization() == "Bearer projected-token"


def test_in_cluster_outside_a_cluster_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"upstream\.inCluster"):
        load_target(
            UpstreamSettings(inCluster=True),
            base_dir=tmp_path,
            service_account_dir=tmp_path,
            environ={},
        )


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rewrite(path: Path, text: str, *, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_token_file_is_reread_after_rotation_at_most_once_a_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token"
    rewrite(path, "old-token", mtime_ns=1_000_000_000)
    clock = FakeClock()
    token = TokenFile(path, clock=clock)

    rewrite(path, "new-token", mtime_ns=2_000_000_000)
    within_the_second = token.authorization()
    clock.now += 1.0
    after_the_second = token.authorization()

    assert within_the_second == "Bearer old-token"
    assert after_the_second == "Bearer new-token"


def test_token_file_replaced_through_a_symlink_swap_is_noticed(tmp_path: Path) -> None:
    # The kubelet rotates projected tokens by swapping a "..data" symlink.
    for name, text in (("v1", "first"), ("v2", "second")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "token").write_text(text)
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "token").symlink_to("..data/token")
    clock = FakeClock()
    token = TokenFile(tmp_path / "token", clock=clock)

    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    clock.now += 5

    assert token.authorization() == "Bearer second"


def test_a_failed_token_reread_keeps_the_last_good_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("good-token")
    clock = FakeClock()
    token = TokenFile(path, clock=clock)

    path.unlink()
    clock.now += 2
    missing = token.authorization()
    rewrite(path, "   \n", mtime_ns=5_000_000_000)
    clock.now += 2
    empty = token.authorization()

    assert missing == empty == "Bearer good-token"


def test_an_empty_token_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("")

    with pytest.raises(ConfigError, match="token file is missing or empty"):
        TokenFile(tmp_path / "token")


async def test_rotated_token_file_reaches_the_api_server(
    serve_upstream: ServeUpstream, pki: Pki, tmp_path: Path
) -> None:
    served = await serve_upstream(record_routes)
    token_path = tmp_path / "token"
    rewrite(token_path, "first-token", mtime_ns=1_000_000_000)
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", served.url, pki, user={"tokenFile": str(token_path)}
    )
    settings = settings_for(kubeconfig)
    loaded = load_target(settings, base_dir=tmp_path)
    assert isinstance(loaded.credential, TokenFile)
    clock = FakeClock()
    # The same target, with a token file whose recheck clock the test drives.
    target = dataclasses.replace(
        loaded, credential=TokenFile(loaded.credential.path, clock=clock)
    )
    upstream = Upstream(target, settings)

    try:
        await upstream.get_json("/api")
        rewrite(token_path, "second-token", mtime_ns=2_000_000_000)
        clock.now += 1.5
        await upstream.get_json("/api")
    finally:
        await upstream.close()

    sent = [request.headers["Authorization"] for request in served.seen.requests]
    assert sent == ["Bearer first-token", "Bearer second-token"]


async def test_get_json_reports_the_api_servers_refusal(
    serve_upstream: ServeUpstream, open_upstream: Callable[..., Upstream]
) -> None:
    def routes(app: web.Application, seen: Seen) -> None:
        async def forbidden(request: web.Request) -> web.Response:
            return web.json_response(
                {"kind": "Status", "message": "namespacegrants is forbidden"},
                status=403,
            )

        app.router.add_get("/apis/kproxy.io/v1alpha1/namespacegrants", forbidden)

    served = await serve_upstream(routes)
    upstream = open_upstream(served.url)

    with pytest.raises(UpstreamError, match="403: namespacegrants is forbidden"):
        await upstream.get_json("/apis/kproxy.io/v1alpha1/namespacegrants")


async def test_watch_events_yields_each_event_even_split_across_chunks(
    serve_upstream: ServeUpstream, open_upstream: Callable[..., Upstream]
) -> None:
    big = "x" * 300_000
    wire = (
        b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n'
        b'{"type":"MODIFIED","object":{"big":"' + big.encode() + b'"}}\n'
        b'{"type":"ERROR","object":{"kind":"Status","code":410}}\n'
    )

    def routes(app: web.Application, seen: Seen) -> None:
        async def watch(request: web.Request) -> web.StreamResponse:
            seen.requests.append(request)
            response = web.StreamResponse()
            await response.prepare(request)
            for start in range(0, len(wire), 7001):
                await response.write(wire[start : start + 7001])
            await response.write_eof()
            return response

        app.router.add_get("/apis/kproxy.io/v1alpha1/namespacegrants", watch)

    served = await serve_upstream(routes)
    upstream = open_upstream(served.url)

    path = "/apis/kproxy.io/v1alpha1/namespacegrants?watch=true&resourceVersion=7"
    events = [event async for event in upstream.watch_events(path)]

    assert [event["type"] for event in events] == ["ADDED", "MODIFIED", "ERROR"]
    assert events[1]["object"]["big"] == big
    assert served.seen.last.raw_path == path
    assert "Impersonate-User" not in served.seen.last.headers


async def test_closing_a_watch_early_frees_its_connection(
    serve_upstream: ServeUpstream, open_upstream: Callable[..., Upstream]
) -> None:
    ended = asyncio.Event()

    def routes(app: web.Application, seen: Seen) -> None:
        async def watch(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b'{"type":"ADDED","object":{}}\n')
            try:
                await asyncio.Future()
            finally:
                ended.set()
            return response

        app.router.add_get("/w", watch)

    served = await serve_upstream(routes)
    upstream = open_upstream(served.url)

    async with contextlib.aclosing(upstream.watch_events("/w")) as events:
        async for event in events:
            assert event["type"] == "ADDED"
            break

    await ended.wait()


async def test_watch_with_a_line_that_is_not_json_is_an_upstream_error(
    serve_upstream: ServeUpstream, open_upstream: Callable[..., Upstream]
) -> None:
    def routes(app: web.Application, seen: Seen) -> None:
        async def garbage(request: web.Request) -> web.Response:
            return web.Response(body=b"<html>proxy error</html>\n")

        app.router.add_get("/w", garbage)

    served = await serve_upstream(routes)
    upstream = open_upstream(served.url)

    with pytest.raises(UpstreamError, match="not JSON"):
        async for _ in upstream.watch_events("/w"):
            pass


def test_transport_exceptions_do_not_leak_past_the_boundary() -> None:
    from kproxy.proxy.upstream import upstream_failure

    cases = [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut"),
        ConnectionRefusedError(),
        TimeoutError(),
        aiohttp.ConnectionTimeoutError(),
    ]
    kinds = [type(upstream_failure(exc, "h")).__name__ for exc in cases]

    assert kinds == [
        "UpstreamError",
        "UpstreamError",
        "UpstreamUnavailableError",
        "UpstreamTimeoutError",
        "UpstreamTimeoutError",
    ]


async def test_a_rotated_client_certificate_is_used_for_new_connections(
    serve_upstream: ServeUpstream, pki: Pki, tmp_path: Path
) -> None:
    served = await serve_upstream(record_routes, require_client_cert=True)
    # kproxy starts with a certificate the API server no longer accepts, as after
    # its expiry; the operator's rotation then writes a good pair in its place.
    other_ca_key, stale_key = _key(), _key()
    other_ca = _certificate("another-ca", other_ca_key, None, other_ca_key)
    stale = _certificate(
        "kproxy",
        stale_key,
        other_ca,
        other_ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    _write_cert(stale, cert)
    _write_key(stale_key, key)
    user = {"client-certificate": str(cert), "client-key": str(key)}
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", served.url, pki, user=user)
    settings = settings_for(kubeconfig)
    loaded = load_target(settings, base_dir=tmp_path)
    clock = FakeClock()
    tls = ReloadingTLS(loaded.tls.build, loaded.tls.paths, clock=clock)
    upstream = Upstream(dataclasses.replace(loaded, tls=tls), settings)

    try:
        with pytest.raises(UpstreamError):
            await upstream.get_json("/api")
        cert.write_bytes(pki.client_cert.read_bytes())
        key.write_bytes(pki.client_key.read_bytes())
        with pytest.raises(UpstreamError):
            await upstream.get_json("/api")  # not looked at again within a second
        clock.now += 1.5
        answer = await upstream.get_json("/api")
    finally:
        await upstream.close()

    assert answer["kind"] == "APIVersions"


def test_upstream_tls_files_that_do_not_load_keep_the_last_good_context(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki.ca.read_bytes())
    built: list[ssl.SSLContext] = []

    def build() -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=str(ca))
        except ssl.SSLError as exc:
            raise ConfigError.single(
                str(ca), f"cannot load TLS material: {exc}"
            ) from exc
        built.append(context)
        return context

    clock = FakeClock()
    tls = ReloadingTLS(build, (ca,), clock=clock)
    first = tls.current()
    ca.write_text("not a certificate")
    clock.now += 1.5

    assert tls.current() is first
    assert "keeping the last upstream TLS settings" in caplog.text
    clock.now += 1.5
    assert tls.current() is first
    assert len(built) == 1  # a broken file is not retried until it changes again

    ca.write_bytes(pki.ca.read_bytes())
    clock.now += 1.5
    assert tls.current() is not first
