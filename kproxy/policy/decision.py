"""The outcome of evaluating a request against the policies."""

from __future__ import annotations

from dataclasses import dataclass

from kproxy.auth.identity import UserInfo


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow or deny, and what decided it.

    ``decided_by`` names the rule that made the decision in terms safe to show the
    caller: ``policies/alpha.yaml: rules[2] (pods-in-own-namespace)``,
    ``grant team-a/open-to-beta`` or ``no rule matched``. It never describes another
    university's policy. ``user`` is the Kubernetes identity kproxy impersonates when
    the request is allowed, and the mapped identity (if any) when it is denied.
    """

    allowed: bool
    decided_by: str
    university: str | None = None
    user: UserInfo | None = None
    message: str = ""
