"""Rotating what expires under a running kproxy, while a client keeps it busy.

Files are laid out as the kubelet lays out a Secret volume: the real files sit in a
timestamped directory, ``..data`` links to it, and the names kproxy is configured with
link through ``..data``. A rotation writes a new directory, swaps ``..data`` in one
rename and deletes the old directory. The serving certificate is also replaced in
place once, as other setups do. Throughout, a client loop opens a new connection per
request; not one of its requests may fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from cryptography import x509

from kproxy.auth.identity import UserInfo
from kproxy.config import load_configuration
from kproxy.running import Proxy
from kproxy.standins.federation import LocalFederation
from tests.operations.conftest import bearer, eventually, trusting

CONFIGMAPS: Final = "/api/v1/namespaces/alpha/configmaps"
# Requests that must succeed after each rotation before the next one starts.
REQUESTS_PER_STEP: Final = 5


class SecretVolume:
    """A directory shaped like a mounted Secret, rotated as the kubelet does it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir()
        self.generation = 0

    def project(self, files: dict[str, bytes]) -> None:
        """Write a new generation, swap ``..data`` to it, delete the previous one."""
        self.generation += 1
        previous = self._data_target()
        target = self.directory / f"..2026_01_01_00_00_0{self.generation}"
        target.mkdir()
        for name, content in files.items():
            (target / name).write_bytes(content)
        staging = self.directory / "..data_tmp"
        staging.symlink_to(target.name)
        os.replace(staging, self.directory / "..data")
        for name in files:
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        if previous is not None:
            shutil.rmtree(self.directory / previous)

    def replace_in_place(self, files: dict[str, bytes]) -> None:
        """Replace the files behind ``..data`` one by one, each in one rename."""
        for name, content in files.items():
            real = self.directory / "..data" / name
            staging = real.with_name(f".{name}.new")
            staging.write_bytes(content)
            os.replace(staging, real)

    def _data_target(self) -> str | None:
        data = self.directory / "..data"
        return os.readlink(data) if data.is_symlink() else None


@dataclass
class Load:
    """A client making one request per new connection until stopped."""

    url: str
    ca_file: Path
    token: str
    statuses: list[int] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    running: bool = True

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(ssl=trusting(self.ca_file), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while self.running:
                try:
                    async with session.get(
                        self.url + CONFIGMAPS, headers=bearer(self.token)
                    ) as response:
                        await response.read()
                        self.statuses.append(response.status)
                except (aiohttp.ClientError, OSError) as exc:
                    self.failures.append(exc)

    async def step(self) -> None:
        """Wait until ``REQUESTS_PER_STEP`` more requests have been answered."""
        target = len(self.statuses) + len(self.failures) + REQUESTS_PER_STEP

        async def done() -> bool | None:
            return True if len(self.statuses) + len(self.failures) >= target else None

        await eventually(done, what="the client loop making progress")


async def serial_served(url: str, ca_file: Path) -> int:
    """The serial number of the certificate a new handshake is given."""
    address = urlsplit(url)
    _, writer = await asyncio.open_connection(
        address.hostname, address.port, ssl=trusting(ca_file)
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


@pytest.fixture
async def rotating(
    federation: LocalFederation,
) -> tuple[LocalFederation, SecretVolume, SecretVolume]:
    """kproxy reading its serving pair and its upstream token from Secret volumes."""
    tls = SecretVolume(federation.workdir / "tls")
    pair = federation.ca.issue_server()
    tls.project({"tls.crt": pair.cert_pem, "tls.key": pair.key_pem})
    token = SecretVolume(federation.workdir / "serviceaccount")
    token.project({"token": federation.apiserver.proxy_credentials.token.encode()})

    kubeconfig = federation.apiserver.kubeconfig(federation.apiserver.proxy_credentials)
    kubeconfig["users"][0]["user"] = {"tokenFile": "serviceaccount/token"}
    (federation.workdir / "token.kubeconfig").write_text(yaml.safe_dump(kubeconfig))

    settings = yaml.safe_load(federation.config_file.read_text())
    settings["serving"]["tls"] = {
        "certFile": "tls/tls.crt",
        "keyFile": "tls/tls.key",
        "reloadIntervalSeconds": 0.05,
    }
    settings["upstream"] = {"kubeconfig": "token.kubeconfig"}
    # The client loop asks as fast as it is answered, past the default rate for one
    # university; a 429 would say nothing about rotation, so the rate is not limited.
    settings.setdefault("limits", {})["requestsPerSecondPerUniversity"] = 0
    edited = federation.config_file.with_name("rotating.yaml")
    edited.write_text(yaml.safe_dump(settings))
    await federation.proxy.stop()
    federation.proxy = Proxy(load_configuration(edited))
    await federation.proxy.start()
    return federation, tls, token


async def test_serving_certificate_rotations_fail_no_request(
    rotating: tuple[LocalFederation, SecretVolume, SecretVolume],
) -> None:
    federation, tls, _ = rotating
    load = Load(federation.url, federation.ca_file, federation.scheduler_token("alpha"))
    client = asyncio.create_task(load.run())
    first = await serial_served(federation.url, federation.ca_file)

    try:
        await load.step()
        served = [first]
        for rotate in (tls.replace_in_place, tls.project, tls.project):
            pair = federation.ca.issue_server()
            rotate({"tls.key": pair.key_pem, "tls.crt": pair.cert_pem})
            wanted = serial_of(pair.cert_pem)

            async def rotated(wanted: int = wanted) -> int | None:
                serial = await serial_served(federation.url, federation.ca_file)
                return serial if serial == wanted else None

            served.append(await eventually(rotated, what=f"serial {wanted:x} served"))
            await load.step()
    finally:
        load.running = False
        await client

    assert load.failures == []
    assert set(load.statuses) == {200}
    assert len(set(served)) == 4
    expiry = x509.load_pem_x509_certificate(pair.cert_pem).not_valid_after_utc
    metrics = federation.proxy.components.metrics.render().decode()
    (line,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("kproxy_serving_certificate_expiry_timestamp_seconds ")
    ]
    assert float(line.split()[1]) == expiry.timestamp()


async def test_upstream_token_rotation_is_used_without_a_failed_request(
    rotating: tuple[LocalFederation, SecretVolume, SecretVolume],
) -> None:
    federation, _, token = rotating
    apiserver = federation.apiserver
    old = apiserver.proxy_credentials.token
    new = apiserver.add_user(
        UserInfo(username=apiserver.proxy_credentials.username)
    ).token
    load = Load(federation.url, federation.ca_file, federation.scheduler_token("alpha"))
    client = asyncio.create_task(load.run())

    try:
        await load.step()
        token.project({"token": new.encode()})

        async def sent_new_token() -> bool | None:
            recent = apiserver.requests[-1:]
            sent = [r.header_values("Authorization") for r in recent]
            return True if sent == [[f"Bearer {new}"]] else None

        await eventually(sent_new_token, what="the rotated token at the API server")
        await load.step()
    finally:
        load.running = False
        await client

    assert load.failures == []
    assert set(load.statuses) == {200}
    sent = {
        value
        for request in apiserver.requests
        for value in request.header_values("Authorization")
    }
    assert sent == {f"Bearer {old}", f"Bearer {new}"}
