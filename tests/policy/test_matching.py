"""Compiled rules: RBAC's matching rules, and the index agreeing with a plain scan."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy.policy.attributes import RequestInfo, parse_request
from kproxy.policy.matching import CompiledRule, RuleIndex, compile_rule


def rule(resources: list[str], **kwargs: object) -> CompiledRule:
    options: dict[str, object] = {
        "scope": "namespaced",
        "identities": None,
        "namespaces": ["a"],
        "api_groups": [""],
        "verbs": ["get"],
    }
    options.update(kwargs)
    return compile_rule("r", resources=resources, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("resources", "path", "matches"),
    [
        (["pods"], "/api/v1/namespaces/a/pods/p", True),
        (["pods"], "/api/v1/namespaces/a/pods/p/log", False),
        (["pods/log"], "/api/v1/namespaces/a/pods/p/log", True),
        (["pods/log"], "/api/v1/namespaces/a/pods/p", False),
        (["*/log"], "/api/v1/namespaces/a/pods/p/log", True),
        (["pods/*"], "/api/v1/namespaces/a/pods/p/exec", True),
        (["*"], "/api/v1/namespaces/a/pods/p/exec", True),
        (["services"], "/api/v1/namespaces/a/pods/p", False),
    ],
)
def test_resources_match_as_in_rbac(
    resources: list[str], path: str, matches: bool
) -> None:
    assert rule(resources).matches(parse_request("GET", path, "")) is matches


def test_namespaced_rules_never_match_without_a_namespace() -> None:
    wide = rule(["*"], namespaces=["*"], verbs=["*"])
    assert wide.matches(parse_request("GET", "/api/v1/namespaces/x/pods", ""))
    assert not wide.matches(parse_request("GET", "/api/v1/pods", ""))
    assert not wide.matches(parse_request("GET", "/version", ""))


def test_non_resource_urls_match_exactly_or_by_prefix() -> None:
    urls = rule(
        [], scope="cluster", namespaces=None, non_resource_urls=["/version", "/apis/*"]
    )
    assert urls.matches(parse_request("GET", "/version", ""))
    assert urls.matches(parse_request("GET", "/apis/apps", ""))
    assert not urls.matches(parse_request("GET", "/versions", ""))
    assert not urls.matches(parse_request("GET", "/api", ""))


def test_the_first_rule_in_file_order_decides_across_index_buckets() -> None:
    glob = compile_rule(
        "glob",
        scope="namespaced",
        identities=None,
        namespaces=["a*"],
        api_groups=["*"],
        resources=["*"],
        verbs=["*"],
        order=0,
    )
    exact = compile_rule(
        "exact",
        scope="namespaced",
        identities=None,
        namespaces=["ab"],
        api_groups=["*"],
        resources=["*"],
        verbs=["get"],
        order=1,
    )
    request = parse_request("GET", "/api/v1/namespaces/ab/pods/p", "")
    assert RuleIndex.of([glob, exact]).first_match("e", request) is glob
    reordered = [
        compile_rule(
            "exact",
            scope="namespaced",
            identities=None,
            namespaces=["ab"],
            api_groups=["*"],
            resources=["*"],
            verbs=["get"],
            order=0,
        ),
        compile_rule(
            "glob",
            scope="namespaced",
            identities=None,
            namespaces=["a*"],
            api_groups=["*"],
            resources=["*"],
            verbs=["*"],
            order=1,
        ),
    ]
    assert RuleIndex.of(reordered).first_match("e", request).source == "exact"  # type: ignore[union-attr]


NAMESPACES = ["a", "b", "ab"]
rules_strategy = st.lists(
    st.tuples(
        st.sampled_from(["namespaced", "cluster", "any"]),
        st.lists(st.sampled_from([*NAMESPACES, "a*", "*"]), min_size=1, max_size=2)
        | st.none(),
        st.lists(
            st.sampled_from(["get", "list", "create", "*"]), min_size=1, max_size=2
        ),
        st.lists(
            st.sampled_from(["pods", "pods/log", "*", "secrets"]),
            min_size=1,
            max_size=2,
        ),
        st.sampled_from([None, ["e1"], ["e2"]]),
    ),
    max_size=8,
)
requests_strategy = st.builds(
    lambda verb, namespace, resource, sub: RequestInfo(
        verb=verb,
        path="/x",
        is_resource_request=True,
        namespace=namespace,
        resource=resource,
        subresource=sub,
    ),
    st.sampled_from(["get", "list", "create", "delete"]),
    st.sampled_from(["", *NAMESPACES]),
    st.sampled_from(["pods", "secrets"]),
    st.sampled_from(["", "log"]),
)


@settings(max_examples=300, deadline=None)
@given(
    specs=rules_strategy, request=requests_strategy, entry=st.sampled_from(["e1", "e2"])
)
def test_the_index_finds_what_a_plain_scan_finds(
    specs: list[tuple[str, list[str] | None, list[str], list[str], list[str] | None]],
    request: RequestInfo,
    entry: str,
) -> None:
    compiled = []
    for order, (scope, namespaces, verbs, resources, identities) in enumerate(specs):
        if scope == "namespaced" and namespaces is None:
            namespaces = ["a"]
        if scope == "cluster":
            namespaces = None
        compiled.append(
            compile_rule(
                f"r{order}",
                scope=scope,
                identities=identities,
                namespaces=namespaces,
                api_groups=[""],
                resources=resources,
                verbs=verbs,
                order=order,
            )  # type: ignore[arg-type]
        )
    scanned = next(
        (r for r in compiled if r.applies_to(entry) and r.matches(request)), None
    )
    assert RuleIndex.of(compiled).first_match(entry, request) == scanned
