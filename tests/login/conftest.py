"""Fixtures for the client side: a real OIDC provider, a private cache, the command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.login.driving import LOGIN_COMMAND_SCRIPT
from tests.oidc.browser import Person
from tests.oidc.harness import OidcProvider, oidc_node_modules, oidc_provider

__all__ = ["oidc_node_modules", "oidc_provider"]


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$XDG_CACHE_HOME`` for this test and the processes it starts."""
    home = tmp_path / "cache-home"
    home.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def person(oidc_provider: OidcProvider) -> Iterator[Person]:
    """Alice, at a browser that trusts the provider's CA."""
    with Person(ca_file=oidc_provider.ca_file) as alice:
        yield alice


@pytest.fixture(scope="session")
def kproxy_command(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable that runs the ``login`` and ``kubeconfig`` subcommands.

    It registers only ``kproxy.commands.login``, exactly as ``kproxy.cli`` does, so
    these tests exercise the real command without importing the server's modules.
    """
    path = tmp_path_factory.mktemp("bin") / "kproxy"
    path.write_text(LOGIN_COMMAND_SCRIPT.format(python=sys.executable))
    path.chmod(0o755)
    assert os.access(path, os.X_OK)
    return path
