"""Load: requests per second and throughput from wrk, latencies from Python.

wrk (C, one thread) drives throughput, since a Python load generator on a two-core
machine would saturate before a Go or C proxy does. Latency percentiles come from the
lean client in ``bench.client``: one request at a time on each of N connections, every
request timed on its own, so p99 is a real percentile of real requests. When wrk is
missing, a Python generator built on the same client stands in and the results say so.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from bench.client import Connection, request_head

_UNITS: Final = {
    "": 1.0,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "B": 1.0,
    "KB": 1024.0,
    "MB": 1024.0**2,
    "GB": 1024.0**3,
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to send requests, and the headers every request carries."""

    host: str
    port: int
    headers: Mapping[str, str]
    tls: bool = False

    def head(self, path: str) -> bytes:
        return request_head(path, f"{self.host}:{self.port}", self.headers)

    def url(self, path: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}{path}"


@dataclass(frozen=True, slots=True)
class Throughput:
    requests_per_second: float
    bytes_per_second: float
    errors: int
    generator: str


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of values already sorted."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def latencies(
    endpoint: Endpoint, path: str, *, connections: int, requests: int, seconds: float
) -> list[float]:
    """Time each of up to ``requests`` GETs spread over ``connections``, in seconds.

    Stops early at ``seconds`` so a slow target cannot stretch the run; any answer
    other than 200 raises, since a latency of an error measures nothing.
    """
    head = endpoint.head(path)
    deadline = time.perf_counter() + seconds
    per_connection = max(1, requests // connections)
    results: list[list[float]] = [[] for _ in range(connections)]

    async def one(samples: list[float]) -> None:
        connection = await Connection.open(endpoint.host, endpoint.port)
        try:
            await connection.get(head)  # warm: connect and first upstream connection
            for _ in range(per_connection):
                started = time.perf_counter()
                answer = await connection.get(head)
                samples.append(time.perf_counter() - started)
                if answer.status != 200:
                    raise RuntimeError(f"{path} answered {answer.status}")
                if started > deadline:
                    break
        finally:
            await connection.close()

    await asyncio.gather(*(one(samples) for samples in results))
    return sorted(sample for samples in results for sample in samples)


def throughput(
    endpoint: Endpoint, path: str, *, connections: int, seconds: float
) -> Throughput:
    """Saturate ``path`` for ``seconds``: wrk when installed, else Python."""
    wrk = shutil.which("wrk")
    if wrk is not None:
        return _wrk(wrk, endpoint, path, connections=connections, seconds=seconds)
    if endpoint.tls:  # the Python generator speaks plain HTTP only
        return Throughput(float("nan"), float("nan"), 0, "python")
    return asyncio.run(
        _python(endpoint, path, connections=connections, seconds=seconds)
    )


def _wrk(
    wrk: str, endpoint: Endpoint, path: str, *, connections: int, seconds: float
) -> Throughput:
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
    ]
    for name, value in endpoint.headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(endpoint.url(path))
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> Throughput:
    """Read requests/s, transfer/s and errors from wrk's summary."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", output)
    if rps is None or transfer is None:
        raise RuntimeError(f"cannot read wrk output: {output!r}")
    errors = sum(
        int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output)
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Throughput(
        requests_per_second=float(rps.group(1)),
        bytes_per_second=float(transfer.group(1)) * _UNITS[transfer.group(2)],
        errors=errors,
        generator="wrk",
    )


async def _python(
    endpoint: Endpoint, path: str, *, connections: int, seconds: float
) -> Throughput:
    head = endpoint.head(path)
    counts = [0] * connections
    sizes = [0] * connections
    errors = [0] * connections
    deadline = time.perf_counter() + seconds

    async def one(index: int) -> None:
        connection = await Connection.open(endpoint.host, endpoint.port)
        try:
            while time.perf_counter() < deadline:
                answer = await connection.get(head)
                counts[index] += 1
                sizes[index] += answer.body_bytes
                errors[index] += answer.status != 200
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    return Throughput(
        sum(counts) / elapsed, sum(sizes) / elapsed, sum(errors), "python"
    )
