"""What the policy machinery reports while it runs, for metrics and audit.

The observability package implements ``PolicyEvents``; the policy package only calls
it, so it never depends on how events are counted or exported.
"""

from __future__ import annotations

from typing import Protocol


class PolicyEvents(Protocol):
    """Receives reload and grant-sync outcomes; calls must be cheap and not raise."""

    def policy_reload(self, university: str, *, ok: bool) -> None: ...

    def grants_synced(self, *, ok: bool) -> None: ...


class NoPolicyEvents:
    """The default: events go nowhere."""

    def policy_reload(self, university: str, *, ok: bool) -> None:
        return None

    def grants_synced(self, *, ok: bool) -> None:
        return None
