"""Fixtures for the client side: a real OIDC provider, a private cache, the command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
def kproxy_command() -> Path:
    """The ``kproxy`` console script that installing the package put beside Python.

    kubectl runs exactly this file for ``kproxy login``, so the tests use it rather
    than importing the command.
    """
    path = Path(sys.executable).parent / "kproxy"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{str(path)!r} is missing: install kproxy into this environment "
            "(pip install -e '.[dev]') so its console script exists"
        )
    return path
