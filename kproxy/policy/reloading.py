"""Keeping the current ``PolicySet`` in step with the policy directory.

Readers only ever read ``store.current``, one reference to an immutable snapshot; the
store builds a new snapshot and swaps the reference, so there are no locks on the
request path.

At start every file must load: a broken file raises ``ConfigError`` and kproxy stops
with file, line and field. Afterwards a background task polls the directory once a
second. A mounted ConfigMap is updated by writing a new timestamped directory and
atomically re-pointing the ``..data`` symbolic link, so a file's resolved target changes
while its own name and even its modification time may not; the poll therefore compares
each file's resolved path, inode, size and modification time, and reads and hashes the
content only when one of those moved. A file whose content changed is reloaded alone:
if it is broken, its university keeps its last good policy, the problems are logged as
a WARNING and ``policy_reload(university, ok=False)`` is reported. A removed file
removes its university's policy, so deleting a file revokes access.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kproxy.errors import ConfigError, ConfigProblem
from kproxy.policy.events import NoPolicyEvents, PolicyEvents
from kproxy.policy.grants import GrantIndex
from kproxy.policy.loading import (
    compile_guardrails,
    compile_policy_text,
    policy_directory,
    policy_files,
)
from kproxy.policy.policyset import CompiledUniversity, PolicySet
from kproxy.policy.settings import FederationSettings

logger = logging.getLogger(__name__)

POLL_INTERVAL: Final = 1.0

Fingerprint = tuple[str, int, int, int]


@dataclass(slots=True)
class _FileState:
    fingerprint: Fingerprint
    digest: str
    university: str | None


class PolicyStore:
    """The current policy snapshot, and the task that keeps it fresh."""

    def __init__(
        self,
        settings: FederationSettings,
        *,
        base_dir: Path,
        events: PolicyEvents | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        """Load every policy file; raise ``ConfigError`` if any is not acceptable."""
        self.settings = settings
        self.directory = policy_directory(settings, base_dir)
        self.events: PolicyEvents = events or NoPolicyEvents()
        self.poll_interval = poll_interval
        self._files: dict[Path, _FileState] = {}
        self._good: dict[Path, CompiledUniversity] = {}
        problems = self._load_all()
        if problems:
            raise ConfigError(problems)
        self.current = PolicySet.build(
            compile_guardrails(settings), self._universities()
        )

    def _load_all(self) -> list[ConfigProblem]:
        if not self.directory.is_dir():
            raise ConfigError.single(str(self.directory), "policy directory not found")
        problems: list[ConfigProblem] = []
        for path in policy_files(self.directory):
            try:
                self._reload_file(path)
            except ConfigError as exc:
                problems.extend(exc.problems)
        return problems

    def _universities(self) -> dict[str, CompiledUniversity]:
        return {compiled.name: compiled for compiled in self._good.values()}

    def set_grants(self, grants: GrantIndex) -> None:
        """Replace the namespace grants in the current snapshot."""
        self.current = self.current.with_grants(grants)

    def poll(self) -> bool:
        """Check the directory once and apply what changed; return whether it did."""
        try:
            present = set(policy_files(self.directory))
        except OSError as exc:
            logger.warning("cannot list policy directory %s: %s", self.directory, exc)
            return False
        changed = self._drop_removed(present)
        for path in sorted(present):
            changed |= self._poll_file(path)
        if changed:
            self.current = self.current.with_universities(self._universities())
        return changed

    def _drop_removed(self, present: set[Path]) -> bool:
        changed = False
        for path in sorted(set(self._files) - present):
            state = self._files.pop(path)
            if self._good.pop(path, None) is not None:
                logger.info(
                    "policy file %s removed: university %s has no policy",
                    path,
                    state.university,
                )
                self.events.policy_reload(state.university or path.stem, ok=True)
                changed = True
        return changed

    def _poll_file(self, path: Path) -> bool:
        try:
            return self._reload_file(path)
        except ConfigError as exc:
            state = self._files.get(path)
            university = state.university if state and state.university else path.stem
            for problem in exc.problems:
                logger.warning("policy for %s not reloaded: %s", university, problem)
            logger.warning("university %s keeps its last good policy", university)
            self.events.policy_reload(university, ok=False)
            return False

    def _reload_file(self, path: Path) -> bool:
        """Reload one file if its content changed; raise ``ConfigError`` if broken."""
        fingerprint = _fingerprint(path)
        state = self._files.get(path)
        if state is not None and state.fingerprint == fingerprint:
            return False
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError.single(str(path), f"cannot read file: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if state is not None and state.digest == digest:
            state.fingerprint = fingerprint
            return False
        previous = state.university if state else None
        # Remember the content even when it is broken, so it is reported once.
        self._files[path] = _FileState(fingerprint, digest, previous)
        compiled = self._compile(path, data)
        self._files[path].university = compiled.name
        self._good[path] = compiled
        logger.info("loaded policy for university %s from %s", compiled.name, path)
        self.events.policy_reload(compiled.name, ok=True)
        return True

    def _compile(self, path: Path, data: bytes) -> CompiledUniversity:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError.single(str(path), "file is not UTF-8") from exc
        compiled = compile_policy_text(text, path, self.settings)
        for other_path, other in self._good.items():
            if other_path != path and other.name == compiled.name:
                raise ConfigError.single(
                    str(path),
                    f"university {compiled.name!r} already has a policy file",
                    field="metadata.name",
                )
        return compiled

    async def run(self) -> None:
        """Poll until cancelled; never raises for a broken or missing file."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.poll()
            except Exception:
                logger.exception("policy reload failed unexpectedly")


def _fingerprint(path: Path) -> Fingerprint:
    try:
        resolved = os.path.realpath(path)
        stat = os.stat(resolved)
    except OSError as exc:
        raise ConfigError.single(str(path), f"cannot read file: {exc}") from exc
    return resolved, stat.st_ino, stat.st_size, stat.st_mtime_ns
