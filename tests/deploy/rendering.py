"""Rendering the kustomizations with the real kubectl, and finding objects in them."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
KUBECTL: Final = "/usr/bin/kubectl"

Manifest = dict[str, Any]


@functools.cache
def kustomize(directory: Path) -> list[Manifest]:
    """Render one kustomization as the documented command does (once per process).

    Kustomize's default load restrictions apply: the base reaches the CRD through
    the kustomization in ``deploy/crds``, never by a file path outside its root.
    """
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The single object of ``kind`` (and ``name``), failing clearly otherwise."""
    found = [
        manifest
        for manifest in manifests
        if manifest["kind"] == kind
        and (name is None or manifest["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def all_of(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]
