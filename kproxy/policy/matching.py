"""Rules compiled for matching: sets and precompiled patterns, built once per load.

A rule reads as an RBAC ``PolicyRule`` does, and matches as one:

- ``verbs``, ``apiGroups``: the request's value is listed, or ``*`` is;
- ``resources``: ``*`` matches every resource and subresource; ``pods`` matches the
  resource alone; ``pods/log`` the subresource; ``*/status`` that subresource of any
  resource; ``pods/*`` (an addition to RBAC) every subresource of pods;
- ``nonResourceURLs``: an exact path, or a prefix ending in ``*``;
- ``namespaces`` (kproxy's own): names and globs with ``*`` and ``?``.

Scopes decide which requests a rule may see at all. A namespaced rule never matches a
request without a namespace, so listing or watching across all namespaces needs a
cluster rule. A deny limited to namespaces also applies to requests without one,
because a list across all namespaces reaches into the denied namespaces too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from kproxy.policy.attributes import NON_RESOURCE_VERBS, RESOURCE_VERBS, RequestInfo

ANY: Final = "*"

Scope = Literal["namespaced", "cluster", "any"]


@dataclass(frozen=True, slots=True)
class Patterns:
    """A set of names and globs, matched by one set lookup and at most one regex."""

    exact: frozenset[str]
    pattern: re.Pattern[str] | None = None
    everything: bool = False

    @classmethod
    def of_globs(cls, items: Iterable[str]) -> Patterns:
        """Compile names with ``*`` and ``?`` wildcards (namespace and name globs)."""
        return cls._compile(items, lambda item: "*" in item or "?" in item)

    @classmethod
    def of_prefixes(cls, items: Iterable[str]) -> Patterns:
        """Compile names where only a trailing ``*`` is special (users, groups)."""
        return cls._compile(items, lambda item: item.endswith("*"))

    @classmethod
    def _compile(cls, items: Iterable[str], is_glob: Callable[[str], bool]) -> Patterns:
        exact: set[str] = set()
        globs: list[str] = []
        for item in items:
            if item == ANY:
                return cls(frozenset(), everything=True)
            if is_glob(item):
                globs.append(item)
            else:
                exact.add(item)
        if not globs:
            return cls(frozenset(exact))
        regex = "|".join(_glob_regex(glob) for glob in globs)
        return cls(frozenset(exact), re.compile(f"(?:{regex})\\Z"))

    def matches(self, value: str) -> bool:
        if self.everything or value in self.exact:
            return True
        return self.pattern is not None and self.pattern.match(value) is not None


def _glob_regex(glob: str) -> str:
    return "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char)
        for char in glob
    )


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One allow or deny rule, ready to match; ``source`` says where it was written."""

    source: str
    scope: Scope
    identities: frozenset[str] | None
    namespaces: Patterns | None
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    non_resource_urls: frozenset[str] = frozenset()
    non_resource_prefixes: tuple[str, ...] = ()
    order: int = 0

    def applies_to(self, entry: str) -> bool:
        return self.identities is None or entry in self.identities

    def matches(self, request: RequestInfo) -> bool:
        """Whether the rule covers the request; identities are checked apart."""
        if ANY not in self.verbs and request.verb not in self.verbs:
            return False
        if not request.is_resource_request:
            return self.scope != "namespaced" and self._matches_url(request.path)
        if not self._matches_scope(request.namespace):
            return False
        if ANY not in self.api_groups and request.api_group not in self.api_groups:
            return False
        return self._matches_resource(request.resource, request.subresource)

    def _matches_scope(self, namespace: str) -> bool:
        if self.scope == "cluster":
            return not namespace
        if self.scope == "namespaced":
            return (
                bool(namespace)
                and self.namespaces is not None
                and (self.namespaces.matches(namespace))
            )
        return (
            not namespace
            or self.namespaces is None
            or (self.namespaces.matches(namespace))
        )

    def _matches_resource(self, resource: str, subresource: str) -> bool:
        resources = self.resources
        if ANY in resources:
            return True
        if not subresource:
            return resource in resources
        return (
            f"{resource}/{subresource}" in resources
            or f"*/{subresource}" in resources
            or f"{resource}/*" in resources
        )

    def _matches_url(self, path: str) -> bool:
        if path in self.non_resource_urls:
            return True
        return any(path.startswith(prefix) for prefix in self.non_resource_prefixes)


def compile_rule(
    source: str,
    *,
    scope: Scope,
    identities: Iterable[str] | None,
    namespaces: Iterable[str] | None,
    api_groups: Iterable[str],
    resources: Iterable[str],
    verbs: Iterable[str],
    non_resource_urls: Iterable[str] = (),
    order: int = 0,
) -> CompiledRule:
    """Build a ``CompiledRule``; every list becomes a set or a compiled pattern."""
    urls = tuple(non_resource_urls)
    return CompiledRule(
        source=source,
        scope=scope,
        identities=None if identities is None else frozenset(identities),
        namespaces=None if namespaces is None else Patterns.of_globs(namespaces),
        api_groups=frozenset(api_groups),
        resources=frozenset(resources),
        verbs=frozenset(verbs),
        non_resource_urls=frozenset(url for url in urls if not url.endswith("*")),
        non_resource_prefixes=tuple(url[:-1] for url in urls if url.endswith("*")),
        order=order,
    )


ALL_VERBS: Final = tuple(dict.fromkeys((*RESOURCE_VERBS, *NON_RESOURCE_VERBS)))


@dataclass(frozen=True, slots=True)
class RuleIndex:
    """Rules indexed by verb and exact namespace, so a decision reads only a few.

    A rule whose scope is fixed to exact namespaces (or to cluster scope, the key
    ``""``) is filed under each (verb, namespace) it can match; the others (globs,
    every namespace) under their verbs alone. The first match in file order wins.
    """

    keyed: Mapping[tuple[str, str], tuple[CompiledRule, ...]]
    unkeyed: Mapping[str, tuple[CompiledRule, ...]]

    @classmethod
    def of(cls, rules: Iterable[CompiledRule]) -> RuleIndex:
        keyed: dict[tuple[str, str], list[CompiledRule]] = {}
        unkeyed: dict[str, list[CompiledRule]] = {}
        for rule in rules:
            verbs = ALL_VERBS if ANY in rule.verbs else tuple(rule.verbs)
            namespaces = _namespace_keys(rule)
            for verb in verbs:
                if namespaces is None:
                    unkeyed.setdefault(verb, []).append(rule)
                    continue
                for namespace in namespaces:
                    keyed.setdefault((verb, namespace), []).append(rule)
        return cls(
            MappingProxyType({key: tuple(found) for key, found in keyed.items()}),
            MappingProxyType({key: tuple(found) for key, found in unkeyed.items()}),
        )

    def first_match(self, entry: str, request: RequestInfo) -> CompiledRule | None:
        """The first rule, in file order, that applies to ``entry`` and matches."""
        found = None
        for rule in self.keyed.get((request.verb, request.namespace), ()):
            if rule.applies_to(entry) and rule.matches(request):
                found = rule
                break
        for rule in self.unkeyed.get(request.verb, ()):
            if found is not None and rule.order > found.order:
                break
            if rule.applies_to(entry) and rule.matches(request):
                return rule
        return found


def _namespace_keys(rule: CompiledRule) -> tuple[str, ...] | None:
    if rule.scope == "cluster":
        return ("",)
    patterns = rule.namespaces
    if patterns is None or patterns.everything or patterns.pattern is not None:
        return None
    if rule.scope == "any":
        return ("", *sorted(patterns.exact))
    return tuple(sorted(patterns.exact))
