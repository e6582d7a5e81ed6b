"""The serving certificate follows its files, checked with real TLS handshakes."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from kproxy.certificates import ServingCertificate
from kproxy.errors import ConfigError
from tests.observe.conftest import Pair

SERVER_NAME = "localhost"


def write_pair(directory: Path, pair: Pair) -> tuple[Path, Path]:
    """Replace the files atomically, as a careful tool or a rename would."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (("tls.crt", pair.certificate), ("tls.key", pair.key)):
        staging = directory / f".{name}.new"
        staging.write_bytes(data)
        os.replace(staging, directory / name)
    return directory / "tls.crt", directory / "tls.key"


def write_secret_volume(volume: Path, pair: Pair, generation: int) -> None:
    """Lay out files as the kubelet does for a Secret, and swap ``..data``."""
    version = volume / f"..2025_01_01_00_00_0{generation}"
    version.mkdir(parents=True)
    (version / "tls.crt").write_bytes(pair.certificate)
    (version / "tls.key").write_bytes(pair.key)
    link = volume / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, volume / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")


async def handshake_serial(port: int, *, server_name: str | None = SERVER_NAME) -> int:
    _reader, writer = await open_tls(port, server_name=server_name)
    try:
        return peer_serial(writer)
    finally:
        writer.close()
        await writer.wait_closed()


async def open_tls(
    port: int, *, server_name: str | None = SERVER_NAME
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, server_hostname=server_name or ""
    )


def peer_serial(writer: asyncio.StreamWriter) -> int:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


async def http_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    body = await reader.readexactly(length)
    return head.split(b"\r\n")[0] + b" " + body


async def hello(_: web.Request) -> web.Response:
    return web.Response(text="hello")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[ssl.SSLContext], asyncio.Future[int]]]:
    runners: list[web.AppRunner] = []

    async def start(context: ssl.SSLContext) -> int:
        app = web.Application()
        app.router.add_get("/hello", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return runner.addresses[0][1]  # type: ignore[no-any-return]

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


async def test_new_handshakes_get_the_replaced_certificate_and_old_ones_keep_working(
    tmp_path: Path, new_pair: Callable[[], Pair], serve
) -> None:
    first, second = new_pair(), new_pair()
    cert_file, key_file = write_pair(tmp_path, first)
    certificate = ServingCertificate(cert_file, key_file)
    port = await serve(certificate.context)
    reader, writer = await open_tls(port)
    assert peer_serial(writer) == first.serial

    write_pair(tmp_path, second)
    assert certificate.reload_if_changed()

    assert await handshake_serial(port) == second.serial
    assert await handshake_serial(port, server_name=None) == second.serial
    assert await http_get(reader, writer, "/hello") == b"HTTP/1.1 200 OK hello"
    assert peer_serial(writer) == first.serial
    writer.close()
    await writer.wait_closed()


async def test_a_swapped_secret_volume_is_picked_up_by_the_background_task(
    tmp_path: Path, new_pair: Callable[[], Pair], serve
) -> None:
    first, second = new_pair(), new_pair()
    volume = tmp_path / "tls"
    write_secret_volume(volume, first, generation=1)
    certificate = ServingCertificate(
        volume / "tls.crt", volume / "tls.key", poll_interval=0.01
    )
    await certificate.start()
    port = await serve(certificate.context)
    assert await handshake_serial(port) == first.serial

    write_secret_volume(volume, second, generation=2)
    for _ in range(500):
        if certificate.current.serial == second.serial:
            break
        await asyncio.sleep(0.01)
    await certificate.close()

    assert await handshake_serial(port) == second.serial
    assert [t for t in asyncio.all_tasks() if "certificate" in t.get_name()] == []


async def test_a_mismatched_pair_keeps_the_old_certificate_and_warns(
    tmp_path: Path,
    new_pair: Callable[[], Pair],
    serve,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second, third = new_pair(), new_pair(), new_pair()
    cert_file, key_file = write_pair(tmp_path, first)
    certificate = ServingCertificate(cert_file, key_file)
    port = await serve(certificate.context)

    # Half a rotation: the new certificate is in place, its key is not yet.
    cert_file.write_bytes(second.certificate)
    with caplog.at_level(logging.WARNING, logger="kproxy.certificates"):
        assert not certificate.reload_if_changed()
    assert await handshake_serial(port) == first.serial
    assert "was not reloaded" in caplog.text
    assert certificate.reload_if_changed() is False

    write_pair(tmp_path, third)
    assert certificate.reload_if_changed()
    assert await handshake_serial(port) == third.serial


async def test_garbage_in_place_of_the_certificate_keeps_the_old_one(
    tmp_path: Path, new_pair: Callable[[], Pair], serve
) -> None:
    first = new_pair()
    cert_file, key_file = write_pair(tmp_path, first)
    certificate = ServingCertificate(cert_file, key_file)
    port = await serve(certificate.context)

    cert_file.write_text("not a certificate\n")
    key_file.unlink()

    assert not certificate.reload_if_changed()
    assert await handshake_serial(port) == first.serial


def test_unloadable_files_at_start_are_a_configuration_error(
    tmp_path: Path, new_pair: Callable[[], Pair]
) -> None:
    cert_file, key_file = write_pair(tmp_path, new_pair())
    key_file.write_bytes(new_pair().key)

    with pytest.raises(ConfigError) as caught:
        ServingCertificate(cert_file, key_file)

    (problem,) = caught.value.problems
    assert problem.file == str(cert_file)
    assert problem.field == "serving.tls"
    assert "cannot load the serving certificate" in problem.message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        ServingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")


def tls12_client(ciphers: str) -> ssl.SSLContext:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(ciphers)
    return client


async def test_tls12_is_served_with_forward_secret_aead_suites_only(
    tmp_path: Path, new_pair: Callable[[], Pair], serve
) -> None:
    certificate = ServingCertificate(*write_pair(tmp_path, new_pair()))
    port = await serve(certificate.context)

    aead = tls12_client("ECDHE-ECDSA-AES128-GCM-SHA256")
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=aead)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()
    await writer.wait_closed()

    cbc = tls12_client("ECDHE-ECDSA-AES128-SHA256")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.open_connection("127.0.0.1", port, ssl=cbc)


def test_no_version_below_tls12_is_ever_enabled(
    tmp_path: Path, new_pair: Callable[[], Pair]
) -> None:
    certificate = ServingCertificate(*write_pair(tmp_path, new_pair()))
    newest = ServingCertificate(
        *write_pair(tmp_path / "13", new_pair()), min_version=ssl.TLSVersion.TLSv1_3
    )

    assert certificate.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert certificate.current.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert newest.current.context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_expiry_of_the_certificate_in_use_is_reported(
    tmp_path: Path, new_pair: Callable[..., Pair]
) -> None:
    pair = new_pair(days=3)
    certificate = ServingCertificate(*write_pair(tmp_path, pair))
    expected = x509.load_pem_x509_certificate(pair.certificate).not_valid_after_utc

    assert certificate.not_after == expected.timestamp()
