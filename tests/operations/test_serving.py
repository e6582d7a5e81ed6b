"""``kproxy serve`` as a process: SIGTERM during a watch, and several workers on a port.

The federation (issuers, API server stand-in) runs in the test; kproxy runs as the
real command in a subprocess, from a copy of the federation's configuration file with
its own audit file and an INFO log in JSON, from which the test reads the addresses
the process bound.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kproxy.standins.federation import LocalFederation
from tests.operations.conftest import bearer, eventually, trusting

CONFIGMAPS: Final = "/api/v1/namespaces/alpha/configmaps"
SERVING: Final = "kproxy serving on "
REQUESTS: Final = 20


class Serve:
    """A ``kproxy serve`` subprocess and the JSON log records it has written."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.records: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read(), name="test-serve-stderr")

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            try:
                self.records.append(json.loads(line))
            except ValueError:
                self.records.append({"message": line.decode(errors="replace")})

    def serving(self) -> list[tuple[str, str]]:
        """(proxy URL, probe URL) of every process that has started serving."""
        found = []
        for record in self.records:
            message = record.get("message", "")
            if message.startswith(SERVING):
                proxy, _, probes = message.removeprefix(SERVING).partition(
                    ", probes on "
                )
                found.append((proxy, probes))
        return found

    async def started(self, processes: int = 1) -> list[tuple[str, str]]:
        async def ready() -> list[tuple[str, str]] | None:
            if self.process.returncode is not None:
                raise AssertionError(f"kproxy serve exited: {self.records}")
            found = self.serving()
            return found if len(found) >= processes else None

        return await eventually(ready, what=f"{processes} processes serving")

    async def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await self.process.wait()
        await self._reader
        return code


def serve_config(
    federation: LocalFederation, *, port: int = 0, probe_port: int = 0
) -> Path:
    settings = yaml.safe_load(federation.config_file.read_text())
    settings["serving"]["port"] = port
    settings["serving"]["probes"]["port"] = probe_port
    settings["serving"]["shutdownGracePeriodSeconds"] = 20
    settings["audit"] = {"path": "serve-audit.log"}
    settings["logging"] = {"level": "info", "format": "json"}
    path = federation.config_file.with_name("serve.yaml")
    path.write_text(yaml.safe_dump(settings))
    return path


@asynccontextmanager
async def serving(config: Path, *arguments: str) -> AsyncIterator[Serve]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kproxy",
        "serve",
        "--config",
        str(config),
        *arguments,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    serve = Serve(process)
    try:
        yield serve
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await serve._reader


def reserved_port() -> socket.socket:
    """A port of our own that kproxy's SO_REUSEPORT listeners can share.

    Bound but never listening, it takes no connections; it keeps the ephemeral port
    from going to anyone else while the workers bind it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_sigterm_ends_a_watch_cleanly_and_exits_zero(
    federation: LocalFederation, client: aiohttp.ClientSession
) -> None:
    token = federation.scheduler_token("alpha")
    async with serving(serve_config(federation)) as serve:
        ((url, _),) = await serve.started()
        async with client.get(
            url + CONFIGMAPS + "?watch=true", headers=bearer(token)
        ) as watch:
            assert watch.status == 200
            federation.apiserver.create(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "seen", "namespace": "alpha"},
                }
            )
            assert b'"seen"' in await watch.content.readline()

            serve.process.send_signal(signal.SIGTERM)
            # ClientPayloadError here would mean the stream was cut, not ended.
            rest = await watch.content.read()

        code = await serve.terminate()

    assert rest == b""
    assert code == 0
    messages = [record.get("message", "") for record in serve.records]
    assert any(message.startswith("terminating: draining") for message in messages)
    access = [r for r in serve.records if r.get("logger") == "kproxy.access"]
    assert [(r["verb"], r["status"]) for r in access] == [("watch", 200)]


async def request_count(session: aiohttp.ClientSession, probes: str) -> float:
    async with session.get(probes + "/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kproxy_requests_total" and sample.labels == {
                "verb": "list",
                "code": "200",
                "university": "alpha",
            }:
                return sample.value
    return 0.0


async def test_two_workers_share_one_port_and_both_serve(
    federation: LocalFederation,
) -> None:
    token = federation.scheduler_token("alpha")
    with reserved_port() as proxy_port, reserved_port() as probe_port:
        config = serve_config(
            federation,
            port=proxy_port.getsockname()[1],
            probe_port=probe_port.getsockname()[1],
        )
        async with serving(config, "--workers", "2") as serve:
            started = await serve.started(processes=2)
            assert len({url for url, _ in started}) == 1
            url, probes = started[0]
            connector = aiohttp.TCPConnector(
                ssl=trusting(federation.ca_file), force_close=True
            )
            async with aiohttp.ClientSession(connector=connector) as session:
                statuses = []
                for _ in range(REQUESTS):
                    async with session.get(
                        url + CONFIGMAPS, headers=bearer(token)
                    ) as response:
                        statuses.append(response.status)
                seen: set[float] = set()

                # Each worker counts only what it served; a scrape reaches either.
                async def shared() -> set[float] | None:
                    seen.add(await request_count(session, probes))
                    both = sum(seen) == REQUESTS and REQUESTS not in seen
                    return seen if both or seen == {REQUESTS / 2} else None

                counts = await eventually(shared, what="each worker serving a part")
            code = await serve.terminate()

    assert statuses == [200] * REQUESTS
    assert all(0 < count < REQUESTS for count in counts)
    assert code == 0
