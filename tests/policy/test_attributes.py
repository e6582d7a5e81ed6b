"""Request attributes, case by case against kube-apiserver's ``NewRequestInfo``."""

from __future__ import annotations

import pytest

from kproxy.errors import BadRequestError
from kproxy.policy.attributes import RequestInfo, parse_request

R = RequestInfo

CASES = [
    # (method, path, query, expected fields)
    ("GET", "/api/v1/namespaces", "", {"verb": "list", "resource": "namespaces"}),
    (
        "GET",
        "/api/v1/namespaces/alpha",
        "",
        {
            "verb": "get",
            "namespace": "alpha",
            "resource": "namespaces",
            "name": "alpha",
        },
    ),
    (
        "PUT",
        "/api/v1/namespaces/alpha/status",
        "",
        {
            "verb": "update",
            "namespace": "alpha",
            "resource": "namespaces",
            "name": "alpha",
            "subresource": "status",
        },
    ),
    (
        "PUT",
        "/api/v1/namespaces/alpha/finalize",
        "",
        {
            "verb": "update",
            "namespace": "alpha",
            "resource": "namespaces",
            "name": "alpha",
            "subresource": "finalize",
        },
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "",
        {"verb": "list", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "HEAD",
        "/api/v1/namespaces/alpha/pods/p",
        "",
        {"verb": "get", "namespace": "alpha", "resource": "pods", "name": "p"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "watch=1",
        {"verb": "watch", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "watch=true",
        {"verb": "watch", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "watch=",
        {"verb": "watch", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "watch",
        {"verb": "watch", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "watch=yes",
        {"verb": "watch", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "watch=FALSE",
        {"verb": "list", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "watch=0",
        {"verb": "list", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "watch=0&watch=1",
        {"verb": "list", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods",
        "Watch=1",
        {"verb": "list", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods/p",
        "watch=true",
        {"verb": "get", "namespace": "alpha", "resource": "pods", "name": "p"},
    ),
    (
        "GET",
        "/api/v1/watch/namespaces/alpha/pods",
        "",
        {"verb": "watch", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/watch/namespaces/alpha/pods/p",
        "",
        {"verb": "watch", "namespace": "alpha", "resource": "pods", "name": "p"},
    ),
    (
        "GET",
        "/api/v1/watch/pods",
        "fieldSelector=metadata.name%3Dp",
        {"verb": "watch", "resource": "pods"},
    ),
    (
        "GET",
        "/api/v1/proxy/namespaces/alpha/pods/p/x/y",
        "",
        {"verb": "proxy", "namespace": "alpha", "resource": "pods", "name": "p"},
    ),
    (
        "POST",
        "/api/v1/namespaces/alpha/pods/p/exec",
        "command=ls",
        {
            "verb": "create",
            "namespace": "alpha",
            "resource": "pods",
            "name": "p",
            "subresource": "exec",
        },
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/pods/p/log",
        "follow=true",
        {
            "verb": "get",
            "namespace": "alpha",
            "resource": "pods",
            "name": "p",
            "subresource": "log",
        },
    ),
    (
        "DELETE",
        "/api/v1/namespaces/alpha/pods/p",
        "",
        {"verb": "delete", "namespace": "alpha", "resource": "pods", "name": "p"},
    ),
    (
        "DELETE",
        "/api/v1/namespaces/alpha/pods",
        "labelSelector=a%3Db",
        {"verb": "deletecollection", "namespace": "alpha", "resource": "pods"},
    ),
    (
        "PATCH",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons/c",
        "",
        {
            "verb": "patch",
            "api_prefix": "apis",
            "api_group": "multicluster.admiralty.io",
            "namespace": "alpha",
            "resource": "podchaperons",
            "name": "c",
        },
    ),
    (
        "GET",
        "/apis/multicluster.admiralty.io/v1alpha1/clustersummaries",
        "watch=1&resourceVersion=0",
        {
            "verb": "watch",
            "api_prefix": "apis",
            "api_group": "multicluster.admiralty.io",
            "resource": "clustersummaries",
        },
    ),
    (
        "GET",
        "/apis/apps/v1/namespaces/alpha/deployments/d/scale",
        "",
        {
            "verb": "get",
            "api_prefix": "apis",
            "api_group": "apps",
            "namespace": "alpha",
            "resource": "deployments",
            "name": "d",
            "subresource": "scale",
        },
    ),
    (
        "OPTIONS",
        "/api/v1/namespaces/alpha/pods",
        "",
        {"verb": "", "namespace": "alpha", "resource": "pods"},
    ),
    # Field selectors on metadata.name make a list or watch name-scoped.
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name%3Dc",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps", "name": "c"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name%3D%3Dc&watch=1",
        {"verb": "watch", "namespace": "alpha", "resource": "configmaps", "name": "c"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name!%3Dc",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name%3Db,metadata.name%3Da",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps", "name": "a"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.namespace%3Dx,metadata.name%3Dc",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps", "name": "c"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name%3D..",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name%3Da%2Fb",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name%3Da%3Db",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name%3Da%5C%3Db",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps", "name": "a=b"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=bogus",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps"},
    ),
    (
        "GET",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name+%3Dc",
        {"verb": "list", "namespace": "alpha", "resource": "configmaps"},
    ),
    (
        "DELETE",
        "/api/v1/namespaces/alpha/configmaps",
        "fieldSelector=metadata.name%3Dc",
        {"verb": "deletecollection", "namespace": "alpha", "resource": "configmaps"},
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    CASES,
    ids=[f"{c[0]} {c[1]}?{c[2]}" for c in CASES],
)
def test_resource_requests_read_as_the_api_server_reads_them(
    method: str, path: str, query: str, expected: dict[str, str]
) -> None:
    info = parse_request(method, path, query)
    fields = {"api_prefix": "api", "api_version": "v1", "is_resource_request": True}
    if path.startswith("/apis/"):
        fields["api_version"] = path.split("/")[3]
    fields.update(expected)
    assert info == RequestInfo(path=path, **{"verb": "", **fields})  # type: ignore[arg-type]


NON_RESOURCE = [
    ("GET", "/", "get"),
    ("GET", "/version", "get"),
    ("GET", "/healthz", "get"),
    ("GET", "/api", "get"),
    ("GET", "/api/v1", "get"),
    ("GET", "/apis", "get"),
    ("GET", "/apis/apps", "get"),
    ("GET", "/apis/apps/v1", "get"),
    ("GET", "/openapi/v3", "get"),
    ("POST", "/openapi/v3/apis/apps/v1", "post"),
    ("GET", "/.well-known/openid-configuration", "get"),
    ("GET", "/API/v1/namespaces", "get"),
]


@pytest.mark.parametrize(
    ("method", "path", "verb"), NON_RESOURCE, ids=[p for _, p, _ in NON_RESOURCE]
)
def test_non_resource_paths_carry_no_resource(
    method: str, path: str, verb: str
) -> None:
    assert parse_request(method, path, "") == RequestInfo(
        verb=verb, path=path, is_resource_request=False
    )


def test_encoded_harmless_characters_are_decoded_like_the_api_server() -> None:
    info = parse_request("GET", "/api/v1/namespaces/alph%61/pods", "")
    assert info.namespace == "alpha"
    assert info.path == "/api/v1/namespaces/alpha/pods"


REFUSED_PATHS = [
    "",
    "api/v1/pods",
    "/api/v1/namespaces/../secrets",
    "/api/v1/namespaces/alpha/pods/..",
    "/api/v1/namespaces/alpha/pods/.",
    "/api/v1/./pods",
    "/api/v1/namespaces/alpha%2Fpods",
    "/api/v1/namespaces/alpha%2fpods",
    "/api/v1/namespaces/%2e%2e/secrets",
    "/api/v1/namespaces/%2E/secrets",
    "/api/v1/namespaces/a%25b/pods",
    "/api/v1/namespaces/alpha/pods/p%",
    "/api/v1/namespaces/alpha/pods/p%zz",
    "/api/v1/namespaces/alpha/pods/p%2",
    "/api/v1//pods",
    "//api/v1/pods",
    "/api/v1/pods/",
    "/api/v1/namespaces/alpha/pods;x=y",
    "/api/v1/namespaces/alpha/pods/p%3Bx",
    "/api/v1/namespaces/alpha/pods/p\\x",
    "/api/v1/namespaces/alpha/pods/p%5Cx",
    "/api/v1/namespaces/alpha/pods/p\x00",
    "/api/v1/namespaces/alpha/pods/p%00",
    "/api/v1/namespaces/alpha/pods/p%0A",
    "/api/v1/namespaces/alpha/pods/p q",
    "/api/v1/namespaces/alpha/pods/pé",
    "/api/v1/namespaces/alpha/pods/p%C3%A9",
    "/api/v1/namespaces/alpha/pods/" + "p" * 5000,
    "/api/v1/watch",
    "/apis/apps/v1/proxy",
]


@pytest.mark.parametrize(
    "path", REFUSED_PATHS, ids=[repr(p[:60]) for p in REFUSED_PATHS]
)
def test_ambiguous_paths_are_refused(path: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        parse_request("GET", path, "")
    assert raised.value.status_code == 400


REFUSED_QUERIES = [
    "watch=1;x=2",
    "watch=%",
    "watch=%g1",
    "a=\x01",
    "a=é",
    "a=b c",
    "watch=fal%C5%BFe",
    "a=" + "b" * 20000,
]


@pytest.mark.parametrize(
    "query", REFUSED_QUERIES, ids=[repr(q[:30]) for q in REFUSED_QUERIES]
)
def test_ambiguous_queries_are_refused(query: str) -> None:
    with pytest.raises(BadRequestError):
        parse_request("GET", "/api/v1/namespaces/alpha/pods", query)
