"""Misbehaviour a test switches on, so kproxy's handling of a bad upstream is tested.

Every switch is off by default and applies to requests whose path starts with
``path_prefix`` (all requests when it is empty), after the request has been
authenticated and recorded, so a test can still see what arrived.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Faults:
    """Fault switches; set the fields, then ``clear()`` to behave again."""

    path_prefix: str = ""
    hang: bool = False
    """Accept the request and answer nothing until ``hang`` is switched off."""
    status_code: int | None = None
    """Answer with a ``Status`` of this code (a 5xx) instead of serving the request."""
    redirect_to: str | None = None
    """Answer ``302 Found`` with this ``Location``."""
    reset_watch_after: int | None = None
    """Abort the connection of a watch after it has sent this many events."""
    refuse_upgrades: int | None = None
    """Answer exec, attach and port-forward upgrades with this status instead of 101."""

    def applies_to(self, path: str) -> bool:
        return path.startswith(self.path_prefix)

    def clear(self) -> None:
        self.path_prefix = ""
        self.hang = False
        self.status_code = None
        self.redirect_to = None
        self.reset_watch_after = None
        self.refuse_upgrades = None
