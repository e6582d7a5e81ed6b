"""The README's first command: the demo federation shows one request allowed, one refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_demo_allows_alpha_and_refuses_beta_with_reasons(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kproxy",
            "demo",
            "--no-keep-running",
            "--workdir",
            str(workdir),
            "--policies",
            str(REPO / "policies"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "namespaces/alpha/podchaperons\n  -> 201 allowed" in out
    assert "decided by policies/alpha.yaml: rules[0] (podchaperons)" in out
    assert (
        "namespaces/beta/podchaperons\n  -> 403 refused, decided by no rule matched"
        in out
    )
    assert "podchaperon.multicluster.admiralty.io/analysis-0" in out
    kubeconfig = yaml.safe_load((workdir / "alpha-scheduler.kubeconfig").read_text())
    assert kubeconfig["contexts"][0]["context"]["namespace"] == "alpha"
    assert (workdir / "audit.log").read_text().count('"kproxy.io/decision":"deny"') >= 1


def test_demo_without_policies_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kproxy", "demo", "--policies", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "policy directory" in result.stderr
