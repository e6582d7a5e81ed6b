"""A large response streams through kproxy without kproxy holding it.

A followed log is the largest thing the API server stand-in can produce without
holding it whole itself: the test appends the same chunk object many times, so the
stand-in keeps references, not copies, and writes one chunk at a time. kubectl reads
the stream in another process, so the memory measured here is kproxy's and the
stand-in's, never the client's. The process's peak resident size (reset through
``/proc/self/clear_refs``) may grow by a fraction of what went through, with generous
slack for buffers and the allocator; a proxy that buffered the body would grow by at
least all of it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Final

from kproxy.standins.federation import LocalFederation

from .clients import LINE_TIMEOUT, kubectl_for, read_line
from .conftest import WORKSHOP, pod

MIB: Final = 1024 * 1024
CHUNK: Final = ("x" * 1023 + "\n") * 256
CHUNKS: Final = 512
STREAMED: Final = len(CHUNK) * CHUNKS
ALLOWED_GROWTH: Final = 48 * MIB
STATUS: Final = Path("/proc/self/status")


def peak_resident_bytes() -> int:
    match = re.search(r"^VmHWM:\s+(\d+) kB$", STATUS.read_text(), re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def reset_peak() -> int:
    """Make the peak the current size (Linux 4.0 and later), and return it."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_resident_bytes()


async def drain(stream: asyncio.StreamReader, size: int) -> int:
    """Read and discard ``size`` bytes, returning how many arrived."""
    received = 0
    while received < size:
        data = await asyncio.wait_for(stream.read(256 * 1024), LINE_TIMEOUT)
        if not data:
            break
        received += len(data)
    return received


async def test_a_large_log_streams_through_with_flat_memory(
    workshop: LocalFederation,
) -> None:
    assert STREAMED == 128 * MIB
    workshop.apiserver.create(pod("chatty", WORKSHOP))
    workshop.apiserver.append_log(WORKSHOP, "chatty", "started\n")
    token = workshop.scheduler_token(WORKSHOP)
    kubectl = kubectl_for(workshop, token, name="delta", namespace=WORKSHOP)

    async with kubectl.running("logs", "-f", "chatty") as follow:
        assert await read_line(follow) == "started\n"
        before = reset_peak()
        for _ in range(CHUNKS):
            workshop.apiserver.append_log(WORKSHOP, "chatty", CHUNK)
        assert follow.stdout is not None
        received = await drain(follow.stdout, STREAMED)
        growth = peak_resident_bytes() - before

    assert received == STREAMED
    assert growth < ALLOWED_GROWTH, f"peak grew by {growth / MIB:.1f} MiB"
