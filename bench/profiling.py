"""Profiler evidence for a missed target: where the time of a request goes.

``py-spy`` samples a running kproxy while wrk loads it, without changing its code;
``cProfile`` is used in-process for the decision. Both are summarised as the few
functions that hold the most time, which is what the report needs to say what bounds
a figure.
"""

from __future__ import annotations

import cProfile
import pstats
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

PY_SPY: Final = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def py_spy(pid: int, *, seconds: int, output: Path, top: int = 12) -> dict[str, Any]:
    """Sample ``pid`` for ``seconds``; the top functions by own and total samples."""
    if not Path(PY_SPY).exists():
        return {"error": "py-spy is not installed"}
    command = [
        PY_SPY,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--format",
        "raw",
        "--output",
        str(output),
        "--nonblocking",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not output.exists():
        return {"error": done.stderr.strip()[-500:]}
    return summarise_collapsed(output.read_text(), top=top)


def summarise_collapsed(text: str, *, top: int) -> dict[str, Any]:
    """Own and inclusive sample shares per function, from collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = lambda c: round(c / max(total, 1), 4)  # noqa: E731
    return {
        "samples": total,
        "own": [(name, share(count)) for name, count in own.most_common(top)],
        "inclusive": [
            (name, share(count))
            for name, count in inclusive.most_common(top * 3)
            if "kproxy" in name or "aiohttp" in name
        ][:top],
    }


def _short(frame: str) -> str:
    # py-spy frames read "function (path/to/module.py:line)"; keep the module's tail.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def cprofile(call: Callable[[], object], *, calls: int, top: int = 8) -> list[Any]:
    """The functions with the most own time over ``calls`` calls."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        call()
    profile.disable()
    stats = pstats.Stats(profile)
    rows = []
    for (path, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            (
                f"{name} ({Path(path).name}:{line})",
                ncalls,
                tottime / calls,
                cumtime / calls,
            )
        )
    rows.sort(key=lambda row: row[2], reverse=True)
    return rows[:top]
