"""Real clients pointed at a running kproxy: kubectl, the Python client, plain HTTP.

kubectl runs as a subprocess with a deadline, so a hung stream fails its test instead
of the session; the ``kubernetes`` client is synchronous, so the tests call it through
``asyncio.to_thread`` while kproxy and the stand-ins serve on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from kubernetes import client, config

from kproxy.standins.federation import LocalFederation

KUBECTL: Final = "/usr/bin/kubectl"
KUBECTL_TIMEOUT: Final = 30.0
LINE_TIMEOUT: Final = 20.0
POLL_ATTEMPTS: Final = 200
POLL_INTERVAL: Final = 0.05


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished kubectl run."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Kubectl:
    """kubectl with one kubeconfig, run without blocking the event loop."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    async def __call__(self, *args: str, stdin: bytes | None = None) -> Completed:
        process = await self._spawn(args, stdin=stdin is not None)
        try:
            async with asyncio.timeout(KUBECTL_TIMEOUT):
                out, err = await process.communicate(stdin)
        finally:
            await stop(process)
        return Completed(process.returncode or 0, out.decode(), err.decode())

    @contextlib.asynccontextmanager
    async def running(self, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
        """A long-running kubectl (``-w``, ``logs -f``), stopped when the block ends."""
        process = await self._spawn(args, stdin=False)
        try:
            yield process
        finally:
            await stop(process)

    async def _spawn(
        self, args: tuple[str, ...], *, stdin: bool
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            KUBECTL,
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # A HOME of its own keeps kubectl's discovery cache out of other tests.
            env={"HOME": str(self.kubeconfig.parent), "PATH": "/usr/bin:/bin"},
        )


async def stop(process: asyncio.subprocess.Process) -> None:
    """Kill a kubectl that is still running and reap it."""
    if process.returncode is None:
        process.kill()
    await process.wait()


async def read_line(process: asyncio.subprocess.Process) -> str:
    """The next line a long-running kubectl prints, within a deadline."""
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), LINE_TIMEOUT)
    return line.decode()


def kubectl_for(
    federation: LocalFederation, token: str, *, name: str, namespace: str = ""
) -> Kubectl:
    """kubectl reaching the target through kproxy with ``token``."""
    return Kubectl(federation.kubeconfig(token, name=name, namespace=namespace))


@contextlib.contextmanager
def python_client(
    federation: LocalFederation, token: str, *, name: str
) -> Iterator[client.ApiClient]:
    """The ``kubernetes`` client configured from the kubeconfig kproxy users get."""
    path = federation.kubeconfig(token, name=name)
    new_client = config.new_client_from_config
    api_client = new_client(config_file=str(path))  # type: ignore[no-untyped-call]
    try:
        yield api_client
    finally:
        api_client.close()
        # The connection pool outlives close(); its sockets would be reported as
        # unclosed whenever the garbage collector finds them, in some later test.
        api_client.rest_client.pool_manager.clear()


@contextlib.asynccontextmanager
async def http_session(
    federation: LocalFederation, token: str
) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for what kubectl cannot send (any Accept, raw paths)."""
    context = ssl.create_default_context(cafile=str(federation.ca_file))
    connector = aiohttp.TCPConnector(ssl=context)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(
        federation.url, connector=connector, headers=headers
    ) as session:
        yield session


async def eventually(check: Callable[[], Awaitable[bool]], *, what: str) -> None:
    """Poll ``check`` until it holds, a bounded number of times, else fail."""
    for _ in range(POLL_ATTEMPTS):
        if await check():
            return
        await asyncio.sleep(POLL_INTERVAL)
    raise AssertionError(f"{what} did not happen after {POLL_ATTEMPTS} attempts")


def status_of(body: str | bytes) -> dict[str, Any]:
    """Parse a Kubernetes ``Status`` body and check that it is one."""
    status: dict[str, Any] = json.loads(body)
    assert status["kind"] == "Status", status
    assert status["apiVersion"] == "v1", status
    assert status["status"] == "Failure", status
    return status
