"""The token cache keeps tokens private and never half-written."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from kproxy.login.cache import CachedTokens, TokenCache, cache_key
from kproxy.login.errors import LoginError
from kproxy.login.settings import LoginSettings

TOKENS = CachedTokens(
    issuer="https://idp",
    client_id="kubectl",
    subject="alice",
    id_token="id",
    id_token_expires_at=1.0,
    access_token="access",
    access_token_expires_at=2.0,
    refresh_token="refresh",
)


def test_a_new_cache_directory_and_its_files_are_owner_only(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "kproxy")
    cache.store("k", TOKENS)

    assert stat.S_IMODE((tmp_path / "kproxy").stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.path("k").stat().st_mode) == 0o600
    assert cache.load("k") == TOKENS
    assert [entry.name for entry in (tmp_path / "kproxy").iterdir()] == ["token-k.json"]


def test_a_widened_directory_is_narrowed_again(tmp_path: Path) -> None:
    directory = tmp_path / "kproxy"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)

    TokenCache(directory)

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_cache_file_others_can_read_is_not_trusted(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "kproxy")
    cache.store("k", TOKENS)
    cache.path("k").chmod(0o644)

    assert cache.load("k") is None


def test_a_symlinked_cache_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "kproxy").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(LoginError, match="is not our directory"):
        TokenCache(tmp_path / "kproxy")


def test_a_corrupt_cache_file_counts_as_no_cache(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "kproxy")
    descriptor = os.open(cache.path("k"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(descriptor, b'{"issuer": ')
    os.close(descriptor)

    assert cache.load("k") is None


def test_a_new_store_replaces_the_old_tokens(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "kproxy")
    cache.store("k", TOKENS)
    cache.store("k", replace(TOKENS, id_token="newer"))

    loaded = cache.load("k")
    assert loaded is not None
    assert loaded.id_token == "newer"


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"issuer": "https://other"}, id="issuer"),
        pytest.param({"client_id": "other"}, id="client"),
        pytest.param({"scopes": ("openid", "groups")}, id="scopes"),
        pytest.param({"resource": "https://kproxy"}, id="resource"),
    ],
)
def test_each_issuer_client_scopes_and_resource_has_its_own_entry(
    other: dict[str, object],
) -> None:
    settings = LoginSettings(issuer="https://idp", client_id="kubectl")

    assert cache_key(settings) != cache_key(replace(settings, **other))


def test_scope_order_does_not_split_the_cache() -> None:
    settings = LoginSettings(
        issuer="https://idp", client_id="c", scopes=("openid", "email")
    )

    assert cache_key(settings) == cache_key(
        replace(settings, scopes=("email", "openid"))
    )


def test_a_symlinked_cache_file_is_not_followed(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "kproxy")
    cache.store("real", TOKENS)
    cache.path("k").symlink_to(cache.path("real"))

    assert cache.load("k") is None
