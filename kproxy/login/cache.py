"""The token cache: one file per (issuer, client id, scopes, resource).

Tokens are credentials, so the cache is private to the user: the directory is 0700
and each file 0600, created that way rather than narrowed afterwards. A file is
replaced atomically (written beside it, then renamed), so a kubectl killed mid-write
leaves the old tokens or the new ones, never half of each. A cache file that someone
else owns or that others may read is ignored rather than trusted: a token in it could
have been planted or copied.

kubectl may run the plugin several times at once (parallel commands, or one command
with several clients), so a login holds an exclusive lock on its entry's lock file:
the second process waits and then finds the first one's tokens in the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kproxy.login.errors import LoginError
from kproxy.login.settings import LoginSettings


@dataclass(frozen=True, slots=True)
class CachedTokens:
    """What one login left behind; ``*_expires_at`` are seconds since the epoch."""

    issuer: str
    client_id: str
    subject: str
    id_token: str
    id_token_expires_at: float
    access_token: str
    access_token_expires_at: float
    refresh_token: str


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kproxy``, or ``~/.cache/kproxy`` as the XDG spec says."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kproxy"


def cache_key(settings: LoginSettings) -> str:
    """A file-name-safe key for the settings that decide which tokens are issued."""
    identity = [
        settings.issuer,
        settings.client_id,
        sorted(settings.scopes),
        settings.resource,
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:40]


class TokenCache:
    """The cache directory, checked or created with owner-only permissions."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        _ensure_private_directory(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"token-{key}.json"

    def load(self, key: str) -> CachedTokens | None:
        """The cached tokens for ``key``; ``None`` if absent, unreadable or unsafe."""
        try:
            descriptor = os.open(self.path(key), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(descriptor, "rb") as file:
                if not _private_to_us(os.fstat(file.fileno())):
                    return None
                document: Any = json.load(file)
            return CachedTokens(**document)
        except (OSError, ValueError, TypeError):
            return None

    def store(self, key: str, tokens: CachedTokens) -> None:
        """Replace ``key``'s tokens atomically with a 0600 file."""
        descriptor, temporary = tempfile.mkstemp(
            dir=self.directory, prefix=".token-", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w") as file:
                json.dump(asdict(tokens), file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold ``key``'s lock, so one process at a time logs in for it."""
        lock_path = self.directory / f"token-{key}.lock"
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)


def _ensure_private_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = directory.lstat()
    except OSError as exc:
        raise LoginError(f"cannot create the token cache {str(directory)!r}") from exc
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
        raise LoginError(f"the token cache {str(directory)!r} is not our directory")
    if status.st_mode & 0o077:
        directory.chmod(0o700)


def _private_to_us(status: os.stat_result) -> bool:
    return (
        stat.S_ISREG(status.st_mode)
        and status.st_uid == os.getuid()
        and not status.st_mode & 0o077
    )
