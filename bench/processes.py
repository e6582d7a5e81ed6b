"""Processes under test: starting them, their memory, the file-descriptor limit."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

WANTED_FILES: Final = 65536


class StartError(RuntimeError):
    """A process ended or stalled before saying it was ready."""


def raise_file_limit(wanted: int = WANTED_FILES) -> int:
    """Raise this process's open-file limit, which its children inherit.

    Ten thousand watches through a proxy hold twenty thousand sockets in the proxy
    alone. Root may raise the hard limit; anyone may raise the soft one to it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((max(wanted, hard), max(wanted, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        except (ValueError, OSError):
            continue
        return limits[0]
    return soft


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, read from ``/proc``."""
    found = [pid]
    for index in range(10_000):
        if index >= len(found):
            break
        children = Path(f"/proc/{found[index]}/task")
        with contextlib.suppress(OSError):
            for task in children.iterdir():
                text = (task / "children").read_text()
                found.extend(int(child) for child in text.split())
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (workers), in bytes."""
    total = 0
    for member in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


@contextlib.contextmanager
def started(
    command: Sequence[str], *, ready: str, cwd: Path, timeout: float = 60.0
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``command`` until its output shows a line starting with ``ready``.

    Yields the process and that line; always ends the process group it started, with
    SIGTERM and then SIGKILL, so no run leaves a server behind.
    """
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        line = _wait_for(process, ready, timeout)
        # Whatever it prints later must be read, or a full pipe would stall it.
        threading.Thread(target=_drain, args=(process,), daemon=True).start()
        yield process, line
    finally:
        _end(process)


def _drain(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    with contextlib.suppress(OSError, ValueError):
        for _ in process.stdout:
            pass


def _wait_for(process: subprocess.Popen[str], ready: str, timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if ready in line:
            return line.strip()
    tail = "".join(seen[-20:])
    raise StartError(f"{process.args!r} did not print {ready!r}:\n{tail}")


def _end(process: subprocess.Popen[str]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        break
    if process.stdout is not None:
        process.stdout.close()
