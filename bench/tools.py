"""What ``make bench`` needs beyond the project's own dependencies, installed on demand.

matplotlib and py-spy are for the benchmark only, so they stay out of the test and
runtime dependencies; wrk comes from Debian. Each is installed only when missing, and a
failed install is not fatal: the harness falls back (a Python load generator, no
profile) and the report says which was used.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _pip_install(*packages: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *packages],
        check=False,
        timeout=600,
    )


def ensure_tools() -> None:
    missing = [
        name for name in ("matplotlib",) if importlib.util.find_spec(name) is None
    ]
    if not (Path(sys.executable).parent / "py-spy").exists():
        missing.append("py-spy")
    if missing:
        print(f"installing {', '.join(missing)} for the benchmark", flush=True)
        _pip_install(*missing)
    if shutil.which("wrk") is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("installing wrk", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            check=False,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )
