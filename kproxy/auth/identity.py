"""Who made a request, once the token has been verified.

A ``UserInfo`` is the Kubernetes notion of a user: the fields kube-apiserver fills from
any authenticator and the ones impersonation can set. An ``Identity`` is a ``UserInfo``
produced by an issuer's claim mappings together with the facts about the token that
policies may match on: the issuer, the subject and the verified claims.

Nothing here is ever built from unverified input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A Kubernetes user: username, uid, groups and extra values."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified token: the user its issuer's mappings produced, and its claims.

    ``expires_at`` is the token's ``exp`` as seconds since the epoch; caches must not
    keep the identity beyond it.
    """

    user: UserInfo
    issuer: str
    subject: str
    claims: Mapping[str, Any]
    expires_at: float


# Extra keys under which the impersonated user carries where it came from, so the
# target's audit log shows who really acted even after a policy renamed them.
PROVENANCE_ISSUER = "kproxy.io/issuer"
PROVENANCE_SUBJECT = "kproxy.io/subject"
PROVENANCE_EXTRA_KEYS = (PROVENANCE_ISSUER, PROVENANCE_SUBJECT)
