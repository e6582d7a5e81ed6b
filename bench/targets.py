"""What is measured: the upstream directly, ``kubectl proxy``, kproxy, and the floor.

Each target is a context manager that starts its process, yields where to send
requests and which process to weigh, and always ends what it started. Both proxies
reach the upstream over TLS with the same kubeconfig, as they would an API server.
The aiohttp relay (``bench.relay``) is kproxy's HTTP stack without kproxy's steps.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.federation import write_kproxy_configuration
from bench.load import Endpoint
from bench.processes import started

KUBECTL: Final = shutil.which("kubectl") or "/usr/bin/kubectl"
ROOT: Final = Path(__file__).resolve().parent.parent
RELAY: Final = "aiohttp relay"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    endpoint: Endpoint
    pids: tuple[int, ...]
    idle_watches: bool = True


@dataclass(frozen=True, slots=True)
class KproxyOptions:
    """The knobs tried on kproxy; each variant is measured as its own target."""

    workers: int = 1
    loop: str = "uvloop"
    audit: bool = True
    idle_watches: bool = True

    @property
    def name(self) -> str:
        suffix = "" if self.loop == "uvloop" else f", {self.loop}"
        if not self.audit:
            suffix += ", no audit"
        return (
            f"kproxy ({self.workers} worker{'s' if self.workers > 1 else ''}{suffix})"
        )


@contextlib.contextmanager
def direct(upstream: Endpoint) -> Iterator[Target]:
    yield Target("direct", upstream, ())


@contextlib.contextmanager
def kubectl_proxy(kubeconfig: Path) -> Iterator[Target]:
    """``kubectl proxy`` on a free port it picks and prints."""
    command = [KUBECTL, "proxy", "--port=0", f"--kubeconfig={kubeconfig}"]
    with started(command, ready="Starting to serve on", cwd=ROOT) as (process, line):
        port = int(line.rsplit(":", 1)[1])
        yield Target("kubectl proxy", Endpoint("127.0.0.1", port, {}), (process.pid,))


@contextlib.contextmanager
def kproxy(
    directory: Path,
    *,
    kubeconfig: Path,
    issuer: object,
    token: str,
    universities: int,
    rules: int,
    options: KproxyOptions,
) -> Iterator[Target]:
    """kproxy with ``options.workers`` processes sharing one port."""
    port = free_port()
    config = write_kproxy_configuration(
        directory,
        kubeconfig=kubeconfig,
        issuer=issuer,  # type: ignore[arg-type]
        universities=universities,
        rules=rules,
        port=port,
        workers=options.workers,
        audit=options.audit,
    )
    command = [
        sys.executable,
        "-m",
        "bench.serving",
        str(config),
        "--loop",
        options.loop,
    ]
    if options.workers > 1:
        command.append("--reuse-port")
    headers = {"Authorization": f"Bearer {token}"}
    endpoint = Endpoint("127.0.0.1", port, headers)
    with _workers(command, options.workers) as pids:
        yield Target(options.name, endpoint, pids, idle_watches=options.idle_watches)


@contextlib.contextmanager
def aiohttp_relay(
    directory: Path, *, kubeconfig: Path, issuer: object
) -> Iterator[Target]:
    """``bench.relay``: kproxy's HTTP stack and upstream pool without its steps."""
    port = free_port()
    config = write_kproxy_configuration(
        directory,
        kubeconfig=kubeconfig,
        issuer=issuer,  # type: ignore[arg-type]
        universities=1,
        rules=1,
        port=port,
    )
    command = [sys.executable, "-m", "bench.relay", str(config)]
    with started(command, ready="listening", cwd=ROOT) as (process, _):
        yield Target(
            RELAY, Endpoint("127.0.0.1", port, {}), (process.pid,), idle_watches=False
        )


@contextlib.contextmanager
def _workers(command: list[str], workers: int) -> Iterator[tuple[int, ...]]:
    with contextlib.ExitStack() as stack:
        pids = [
            stack.enter_context(started(command, ready="listening", cwd=ROOT))[0].pid
            for _ in range(workers)
        ]
        yield tuple(pids)


def free_port() -> int:
    """A port free now, for workers that must all bind the same one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
