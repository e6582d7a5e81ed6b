"""The installed ``kproxy`` command offers the client side's subcommands."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _run(kproxy_command: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kproxy_command), *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_kproxy_help_lists_login_and_kubeconfig(kproxy_command: Path) -> None:
    result = _run(kproxy_command, "--help")

    assert result.returncode == 0, result.stderr
    commands = {
        line.split()[0] for line in result.stdout.splitlines() if line[:4] == "    "
    }
    assert {"login", "kubeconfig"} <= commands


def test_kproxy_login_without_an_issuer_says_which_flag_is_missing(
    kproxy_command: Path,
) -> None:
    result = _run(kproxy_command, "login", "--client-id", "kubectl")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "the following arguments are required: --issuer" in result.stderr
