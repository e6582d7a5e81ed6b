"""What token authentication reports to metrics, without knowing about metrics.

The verifier calls an ``AuthenticationEvents`` object at each point an operator may
want to count; the observability package supplies one that feeds Prometheus. The
reasons for a failure form a small closed set so that a metric's label cannot grow
without bound, and none of them carries anything taken from the token.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol, get_args

FailureReason = Literal[
    "too_large",
    "malformed",
    "untrusted_issuer",
    "algorithm",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "audience",
    "claim_rule",
    "mapping",
    "system_name",
    "user_rule",
    "no_keys",
]

FAILURE_REASONS: Final[tuple[FailureReason, ...]] = get_args(FailureReason)


class AuthenticationEvents(Protocol):
    """Receives counts from token authentication; every method must be cheap."""

    def token_cache(self, *, hit: bool) -> None: ...

    def authentication_failed(self, reason: FailureReason) -> None: ...

    def key_fetch(self, issuer: str, *, ok: bool) -> None: ...


class NoEvents:
    """The default: nothing is counted."""

    def token_cache(self, *, hit: bool) -> None:
        return None

    def authentication_failed(self, reason: FailureReason) -> None:
        return None

    def key_fetch(self, issuer: str, *, ok: bool) -> None:
        return None
