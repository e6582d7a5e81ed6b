"""Running the command-line tools a person or a controller runs, from async tests.

Every call goes through a thread, because the federation (kproxy and the API server
stand-in) is served by the test's own event loop: a blocking ``subprocess.run`` there
would leave kubectl waiting for a server that cannot answer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import pytest

COMMAND_TIMEOUT: Final = 45.0


def console_script() -> Path:
    """The ``kproxy`` executable beside this Python, as ``pip install`` made it."""
    path = Path(sys.executable).parent / "kproxy"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{str(path)!r} is missing: install kproxy into this environment "
            "(pip install -e '.[dev]') so its console script exists"
        )
    return path


async def run(
    *command: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to the end in a thread; stdin is closed unless given text."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(part) for part in command],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


async def kubectl(
    kubeconfig: Path, *arguments: str, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl with only ``kubeconfig``, as the person or controller would run it."""
    return await run(
        "kubectl", "--kubeconfig", kubeconfig, *arguments, input_text=input_text
    )
