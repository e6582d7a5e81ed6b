"""Fixtures that start the API server stand-in and drive it with real kubectl."""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from kproxy.auth.identity import UserInfo
from kproxy.standins.apiserver import ApiServer, Credentials, running_apiserver

KUBECTL = "/usr/bin/kubectl"
KUBECTL_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Kubectl:
    """Runs kubectl against the stand-in with one kubeconfig, without blocking the loop."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    async def __call__(self, *args: str, stdin: bytes | None = None) -> Completed:
        process = await asyncio.create_subprocess_exec(
            KUBECTL,
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdin=asyncio.subprocess.PIPE
            if stdin is not None
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(self.kubeconfig.parent), "PATH": "/usr/bin:/bin"},
        )
        try:
            async with asyncio.timeout(KUBECTL_TIMEOUT):
                out, err = await process.communicate(stdin)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        return Completed(process.returncode or 0, out.decode(), err.decode())

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        """Start a long-running kubectl (``-w``, ``logs -f``) to read from and stop."""
        return await asyncio.create_subprocess_exec(
            KUBECTL,
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(self.kubeconfig.parent), "PATH": "/usr/bin:/bin"},
        )


def write_kubeconfig(
    apiserver: ApiServer, credentials: Credentials, directory: Path, **options: Any
) -> Path:
    path = directory / f"{credentials.username.replace(':', '_')}.kubeconfig"
    path.write_text(yaml.safe_dump(apiserver.kubeconfig(credentials, **options)))
    return path


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    async with running_apiserver(bookmark_interval=0.2) as server:
        yield server
    # A leaked socket then warns in the test that leaked it, not in a later one.
    gc.collect()


@pytest.fixture
def admin(apiserver: ApiServer) -> Credentials:
    return apiserver.add_user(UserInfo(username="admin", groups=("system:masters",)))


@pytest.fixture
def kubectl(apiserver: ApiServer, admin: Credentials, tmp_path: Path) -> Kubectl:
    return Kubectl(write_kubeconfig(apiserver, admin, tmp_path))


def pod(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


@pytest.fixture
async def http(apiserver: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client that trusts the stand-in's CA and sends no credentials."""
    context = ssl.create_default_context(cadata=apiserver.ca_pem.decode())
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(apiserver.url, connector=connector) as session:
        yield session


def bearer(credentials: Credentials, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credentials.token}", **headers}
