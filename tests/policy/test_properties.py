"""Re-encoding a path never changes what kproxy decides, except into a refusal."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kproxy.errors import BadRequestError
from kproxy.policy.attributes import parse_request
from kproxy.policy.policyset import PolicySet
from tests.policy.conftest import ALPHA_CLUSTER, service_account_identity

PATHS = [
    "/api/v1/namespaces/alpha/pods",
    "/api/v1/namespaces/alpha/secrets/s",
    "/api/v1/namespaces/kube-system/secrets/s",
    "/api/v1/namespaces/beta/pods",
    "/api/v1/pods",
    "/api/v1/namespaces/alpha/pods/p/exec",
    "/api/v1/namespaces/alpha/pods/p/log",
    "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons/c",
    "/apis/multicluster.admiralty.io/v1alpha1/clustersummaries",
    "/api/v1/nodes",
    "/version",
]

segment_edit = st.sampled_from(["encode", "dot", "dotdot", "double", "trailing"])


def reencode(path: str, data: st.DataObject) -> str:
    characters = list(path)
    out = []
    for index, char in enumerate(characters):
        if data.draw(st.booleans(), label=f"encode {index}"):
            out.append("%" + data.draw(st.sampled_from(["%02X", "%02x"])) % ord(char))
        else:
            out.append(char)
    text = "".join(out)
    for _ in range(data.draw(st.integers(0, 3))):
        edit = data.draw(segment_edit)
        parts = text.split("/")
        at = data.draw(st.integers(1, len(parts)))
        if edit == "dot":
            parts.insert(at, ".")
        elif edit == "dotdot":
            parts.insert(at, data.draw(st.sampled_from(["..", "%2e%2e", ".%2E"])))
            parts.insert(at, "alpha")
        elif edit == "double":
            parts.insert(at, "")
        else:
            parts.append("")
        text = "/".join(parts)
    return text


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    query=st.sampled_from(["", "watch=1", "fieldSelector=metadata.name%3Dp"]),
    data=st.data(),
)
def test_reencoded_paths_are_refused_or_read_and_decided_the_same(
    policies: PolicySet, path: str, method: str, query: str, data: st.DataObject
) -> None:
    identity = service_account_identity(ALPHA_CLUSTER)
    canonical = parse_request(method, path, query)
    expected = policies.decide(identity, canonical)
    variant = reencode(path, data)
    try:
        info = parse_request(method, variant, query)
    except BadRequestError:
        return
    assert info == canonical
    assert policies.decide(identity, info) == expected


@settings(max_examples=300, deadline=None)
@given(
    raw=st.text(alphabet=string.printable + "é\x00%/.;", max_size=80),
    method=st.sampled_from(["GET", "DELETE"]),
)
def test_any_path_is_parsed_or_refused_cleanly(raw: str, method: str) -> None:
    try:
        info = parse_request(method, "/" + raw, "")
    except BadRequestError:
        return
    assert "/../" not in info.path + "/"
    assert "//" not in info.path
    assert info.path.isascii()
