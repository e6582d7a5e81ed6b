"""One immutable snapshot of every policy, and the decision on one request.

A decision is taken in layers; the first layer that speaks decides:

1. **Admission.** The identity's issuer selects candidate entries across universities;
   the entries whose matchers hold admit it. No entry: denied, "no university admits
   this identity". Entries of two universities: denied, since kproxy could not say
   whose rules apply. Within one university the first entry in file order wins.
2. **Guardrails.** The operator's limits: a mapped user or group the operator forbids,
   or a request in a reserved namespace, is denied whatever any file or grant says.
3. **Explicit denies** of the identity's university.
4. **University rules**: namespaced rules, then cluster rules.
5. **Namespace grants**, when the operator enabled them for this university.
6. **No rule matched**: denied.

Exec, attach and port-forward arriving as a WebSocket ``GET`` must also pass as
``create``, as kube-apiserver 1.35 and later require, so read access never opens an
interactive session.

Every decision names what decided it, in terms that describe only the caller's own
university: its policy file and rule, a grant's namespace and name, a guardrail, or
"no rule matched". Rules are indexed by verb when the set is built, so a decision only
looks at rules that could apply (``RuleIndex``), and identity entries by issuer,
service-account namespace and ``idp`` (``EntryIndex``). Mapped identities are cached
per ``Identity`` object for the life of the snapshot and across grant changes (the
authenticator caches identities per token, so one token maps once).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from kproxy.auth.identity import Identity, UserInfo
from kproxy.policy.attributes import RequestInfo
from kproxy.policy.decision import Decision
from kproxy.policy.grants import GrantIndex
from kproxy.policy.mapping import (
    EntryIndex,
    IdentityEntry,
    MappedIdentity,
    MappingError,
)
from kproxy.policy.matching import CompiledRule, Patterns, RuleIndex

NO_RULE_MATCHED: Final = "no rule matched"
NOT_ADMITTED: Final = "no university admits this identity"
MAPPING_CACHE_SIZE: Final = 4096
CONNECT_SUBRESOURCES: Final = frozenset({"exec", "attach", "portforward"})


@dataclass(frozen=True, slots=True)
class Guardrails:
    """The operator's limits, compiled for matching."""

    forbidden_users: Patterns
    forbidden_groups: Patterns
    reserved_namespaces: Patterns
    grants_enabled: bool = False
    grant_universities: frozenset[str] | None = None

    def grants_apply_to(self, university: str) -> bool:
        if not self.grants_enabled:
            return False
        return self.grant_universities is None or university in self.grant_universities


@dataclass(frozen=True, slots=True)
class CompiledUniversity:
    """One university's policy file, compiled: entries, and indexed rules."""

    name: str
    source: str
    entries: tuple[IdentityEntry, ...]
    denies: RuleIndex
    allows: RuleIndex

    @classmethod
    def build(
        cls,
        name: str,
        source: str,
        *,
        entries: Iterable[IdentityEntry],
        rules: Iterable[CompiledRule],
        cluster_rules: Iterable[CompiledRule],
        denies: Iterable[CompiledRule],
    ) -> CompiledUniversity:
        """Index the rules; namespaced rules come before cluster rules."""
        allows = [
            replace(rule, order=order)
            for order, rule in enumerate((*rules, *cluster_rules))
        ]
        ordered_denies = [
            replace(rule, order=order) for order, rule in enumerate(denies)
        ]
        return cls(
            name=name,
            source=source,
            entries=tuple(entries),
            denies=RuleIndex.of(ordered_denies),
            allows=RuleIndex.of(allows),
        )


@dataclass(frozen=True, slots=True, eq=False)
class PolicySet:
    """Everything needed to decide, frozen; replace the whole set to change it."""

    guardrails: Guardrails
    universities: Mapping[str, CompiledUniversity]
    grants: GrantIndex = field(default_factory=GrantIndex)
    _entries: EntryIndex = field(default_factory=lambda: EntryIndex.of(()))
    _mapped: dict[int, tuple[Identity, MappedIdentity | Decision]] = field(
        default_factory=dict
    )

    @classmethod
    def build(
        cls,
        guardrails: Guardrails,
        universities: Mapping[str, CompiledUniversity],
        grants: GrantIndex | None = None,
    ) -> PolicySet:
        """Index every university's identity entries for admission."""
        entries = [
            entry
            for name in sorted(universities)
            for entry in universities[name].entries
        ]
        return cls(
            guardrails=guardrails,
            universities=MappingProxyType(dict(universities)),
            grants=grants if grants is not None else GrantIndex(),
            _entries=EntryIndex.of(entries),
        )

    def with_grants(self, grants: GrantIndex) -> PolicySet:
        """The same university policies with another set of grants."""
        return PolicySet(
            guardrails=self.guardrails,
            universities=self.universities,
            grants=grants,
            _entries=self._entries,
            _mapped=self._mapped,
        )

    def with_universities(
        self, universities: Mapping[str, CompiledUniversity]
    ) -> PolicySet:
        """New university policies, keeping the grants."""
        return PolicySet.build(self.guardrails, universities, self.grants)

    def map_identity(self, identity: Identity) -> MappedIdentity | Decision:
        """Admit and map the identity, or return the denial that says why not."""
        cached = self._mapped.get(id(identity))
        if cached is not None and cached[0] is identity:
            return cached[1]
        result = self._map(identity)
        if len(self._mapped) >= MAPPING_CACHE_SIZE:
            # A plain dict is several times faster to read than an LRU; starting
            # over when it is full costs one mapping per active token.
            self._mapped.clear()
        self._mapped[id(identity)] = (identity, result)
        return result

    def _map(self, identity: Identity) -> MappedIdentity | Decision:
        admitting = [
            entry
            for entry in self._entries.candidates(identity)
            if entry.admits(identity)
        ]
        if not admitting:
            return Decision(False, NOT_ADMITTED, message=NOT_ADMITTED)
        if len({entry.university for entry in admitting}) > 1:
            message = "identity is admitted by more than one university"
            return Decision(False, "guardrail: ambiguous identity", message=message)
        entry = admitting[0]
        try:
            mapped = entry.map(identity)
        except MappingError as exc:
            message = f"identity cannot be mapped: {exc}"
            return Decision(False, entry.source, entry.university, message=message)
        return self._forbidden(mapped) or mapped

    def _forbidden(self, mapped: MappedIdentity) -> Decision | None:
        user = mapped.user
        if self.guardrails.forbidden_users.matches(user.username):
            return _guardrail(mapped, f"user {user.username!r} is forbidden")
        for group in user.groups:
            if self.guardrails.forbidden_groups.matches(group):
                return _guardrail(mapped, f"group {group!r} is forbidden")
        return None

    def decide(self, identity: Identity, request: RequestInfo) -> Decision:
        """Allow or deny the request for this identity; never raises.

        The ``Decision`` names what decided it; see the module description for the
        order in which layers are consulted.
        """
        mapped = self.map_identity(identity)
        if isinstance(mapped, Decision):
            return mapped
        namespace = request.namespace
        if namespace and self.guardrails.reserved_namespaces.matches(namespace):
            return _guardrail(mapped, f"namespace {namespace!r} is reserved")

        decision = self._evaluate(identity, mapped, request)
        if decision.allowed and _is_connect_upgrade(request):
            # The API server (1.35 and later) also requires ``create`` when exec,
            # attach or port-forward arrive as a WebSocket GET; kproxy always does, so
            # read access never opens an interactive session.
            compound = self._evaluate(identity, mapped, replace(request, verb="create"))
            if not compound.allowed:
                return compound
        return decision

    def _evaluate(
        self, identity: Identity, mapped: MappedIdentity, request: RequestInfo
    ) -> Decision:
        university = self.universities[mapped.university]
        deny = university.denies.first_match(mapped.entry, request)
        if deny is not None:
            return _denied(mapped, request, deny.source, "denied by policy")
        allow = university.allows.first_match(mapped.entry, request)
        if allow is not None:
            return Decision(True, allow.source, mapped.university, mapped.user)
        if self.guardrails.grants_apply_to(mapped.university):
            grant = self.grants.allowing(identity, mapped, request)
            if grant is not None:
                return Decision(True, grant, mapped.university, mapped.user)
        return _denied(mapped, request, NO_RULE_MATCHED, NO_RULE_MATCHED)


def _is_connect_upgrade(request: RequestInfo) -> bool:
    return (
        request.verb == "get"
        and request.resource == "pods"
        and request.api_group == ""
        and request.subresource in CONNECT_SUBRESOURCES
    )


def _guardrail(mapped: MappedIdentity, reason: str) -> Decision:
    return Decision(
        False, f"guardrail: {reason}", mapped.university, mapped.user, message=reason
    )


def _denied(
    mapped: MappedIdentity, request: RequestInfo, decided_by: str, reason: str
) -> Decision:
    return Decision(
        False,
        decided_by,
        mapped.university,
        mapped.user,
        message=f"{describe(mapped.user, request)}: {reason}",
    )


def describe(user: UserInfo, request: RequestInfo) -> str:
    """Say what was refused in the API server's words."""
    username = _quoted(user.username)
    if not request.is_resource_request:
        return f"user {username} cannot {request.verb} path {_quoted(request.path)}"
    resource = request.resource
    if request.subresource:
        resource = f"{resource}/{request.subresource}"
    text = (
        f"user {username} cannot {request.verb} resource {_quoted(resource)} "
        f"in API group {_quoted(request.api_group)}"
    )
    if request.namespace:
        return f"{text} in the namespace {_quoted(request.namespace)}"
    return f"{text} at the cluster scope"


def _quoted(value: str) -> str:
    return json.dumps(value)
