"""The per-request work kproxy does before forwarding, timed in-process.

``TokenAuthenticator.authenticate`` is called directly: cold (every token new, so the
signature is verified and claims mapped) and cached (one token again and again, the
steady state of a controller). ``PolicySet.decide`` is timed on the federation of
``bench.federation``. Each figure is the median of several rounds, each round the mean
of many calls, so timer resolution and one slow call do not matter.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bench.federation import (
    authentication_section,
    federation_section,
    mint,
    new_issuer,
    write_policies,
)
from bench.profiling import cprofile
from bench.upstream import POD_PATH
from kproxy.auth.config import AuthenticationSettings
from kproxy.auth.verifying import TokenAuthenticator
from kproxy.policy.attributes import parse_request
from kproxy.policy.matching import ALL_VERBS, RuleIndex
from kproxy.policy.policyset import PolicySet
from kproxy.policy.reloading import PolicyStore
from kproxy.policy.settings import FederationSettings


def _rounds(call: Callable[[], object], *, calls: int, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - started) / calls)
    return samples


async def _async_rounds(
    call: Callable[[], Any], *, calls: int, rounds: int
) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        samples.append((time.perf_counter() - started) / calls)
    return samples


async def measure(
    *, universities: int, rules: int, calls: int, rounds: int
) -> dict[str, Any]:
    """Seconds per call of each step, and of cached authentication plus decision."""
    issuer = new_issuer()
    settings = AuthenticationSettings.model_validate(
        authentication_section(issuer.jwks())
    )
    authenticator = TokenAuthenticator(settings)
    await authenticator.start()
    try:
        return await _measure(authenticator, issuer, universities, rules, calls, rounds)
    finally:
        await authenticator.close()


async def _measure(
    authenticator: TokenAuthenticator,
    issuer: Any,
    universities: int,
    rules: int,
    calls: int,
    rounds: int,
) -> dict[str, Any]:
    cold_tokens = iter(
        [
            mint(issuer, universities=universities, name=f"sa-{n}")
            for n in range(calls * rounds)
        ]
    )
    cold = await _async_rounds(
        lambda: authenticator.authenticate(next(cold_tokens)),
        calls=calls,
        rounds=rounds,
    )
    token = mint(issuer, universities=universities)
    identity = await authenticator.authenticate(token)
    cached = await _async_rounds(
        lambda: authenticator.authenticate(token), calls=calls * 20, rounds=rounds
    )
    policies = _policy_set(universities, rules)
    info = parse_request("GET", POD_PATH, "")
    first = policies.decide(identity, info)
    if not first.allowed:
        raise RuntimeError(f"bench request denied: {first.message}")
    decide = _rounds(
        lambda: policies.decide(identity, info), calls=calls * 20, rounds=rounds
    )
    scanning = _unindexed(policies)
    if scanning.decide(identity, info).decided_by != first.decided_by:
        raise RuntimeError("the policies without their index decided otherwise")
    decide_scanning = _rounds(
        lambda: scanning.decide(identity, info), calls=calls * 20, rounds=rounds
    )
    parse = _rounds(
        lambda: parse_request("GET", POD_PATH, ""), calls=calls * 20, rounds=rounds
    )
    fresh = [
        await authenticator.authenticate(
            mint(issuer, universities=universities, name=f"m-{n}")
        )
        for n in range(calls)
    ]
    mapping = iter(fresh)
    first_decide = _rounds(
        lambda: policies.decide(next(mapping), info), calls=calls, rounds=1
    )
    medians = {
        "authenticate_cold_seconds": statistics.median(cold),
        "authenticate_cached_seconds": statistics.median(cached),
        "parse_request_seconds": statistics.median(parse),
        "decide_seconds": statistics.median(decide),
        "decide_unindexed_seconds": statistics.median(decide_scanning),
        "decide_first_seconds": statistics.median(first_decide),
    }
    medians["cached_request_seconds"] = (
        medians["authenticate_cached_seconds"] + medians["decide_seconds"]
    )
    profile = cprofile(lambda: policies.decide(identity, info), calls=calls * 20)
    return {
        "decide_profile": [list(row) for row in profile],
        "universities": universities,
        "rules_per_university": rules,
        "decided_by": first.decided_by,
        **medians,
    }


def _unindexed(policies: PolicySet) -> PolicySet:
    """The same policies with every rule tried in file order: what the index saves."""
    return policies.with_universities(
        {
            name: replace(
                university,
                denies=_in_file_order(university.denies),
                allows=_in_file_order(university.allows),
            )
            for name, university in policies.universities.items()
        }
    )


def _in_file_order(index: RuleIndex) -> RuleIndex:
    # A rule indexed under several keys is one object; each is tried once.
    found = {
        id(rule): rule
        for rules in (*index.keyed.values(), *index.unkeyed.values())
        for rule in rules
    }
    ordered = tuple(sorted(found.values(), key=lambda rule: rule.order))
    return RuleIndex(
        MappingProxyType({}), MappingProxyType(dict.fromkeys(ALL_VERBS, ordered))
    )


def _policy_set(universities: int, rules: int) -> Any:
    with tempfile.TemporaryDirectory(prefix="kproxy-bench-policy-") as directory:
        base = Path(directory)
        write_policies(base / "policies", universities=universities, rules=rules)
        settings = FederationSettings.model_validate(
            federation_section(universities, "policies")
        )
        return PolicyStore(settings, base_dir=base).current


def run(*, universities: int, rules: int, calls: int, rounds: int) -> dict[str, Any]:
    return asyncio.run(
        measure(universities=universities, rules=rules, calls=calls, rounds=rounds)
    )
