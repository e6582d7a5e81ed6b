"""The impersonation filter, checked as a function and through real clients."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from kproxy.auth.identity import UserInfo
from kproxy.standins.apiserver import ApiServer, Binding, Credentials, PolicyRule
from kproxy.standins.apiserver.impersonation import impersonate
from kproxy.standins.apiserver.rbac import Attributes, default_bindings, is_allowed
from kproxy.standins.apiserver.statuses import ApiError

from .conftest import Kubectl, bearer, pod, write_kubeconfig

PROXY = UserInfo(username="kproxy", groups=("system:authenticated",))


def allow_all(attributes: Attributes) -> bool:
    return True


def test_no_impersonation_headers_keep_the_caller() -> None:
    assert impersonate([("Accept", "*/*")], PROXY, allow_all) is PROXY


def test_an_empty_impersonate_user_means_no_impersonation() -> None:
    assert impersonate([("Impersonate-User", "")], PROXY, allow_all) is PROXY


@pytest.mark.parametrize(
    ("headers", "listed"),
    [
        pytest.param([("Impersonate-Group", "g1")], "{Group  g1    }", id="group"),
        pytest.param(
            [("Impersonate-Uid", "42")],
            "{UID  42  authentication.k8s.io/v1  }",
            id="uid",
        ),
        pytest.param(
            [("Impersonate-Extra-Scopes", "view")],
            "{UserExtra  view  authentication.k8s.io/v1  scopes}",
            id="extra",
        ),
        pytest.param(
            [("Impersonate-User", ""), ("Impersonate-Group", "g1")],
            "{Group  g1    }",
            id="empty-user-with-group",
        ),
    ],
)
def test_impersonating_without_a_user_is_a_bad_request(
    headers: list[tuple[str, str]], listed: str
) -> None:
    with pytest.raises(ApiError) as caught:
        impersonate(headers, PROXY, allow_all)

    assert caught.value.code == 400
    assert caught.value.status["reason"] == "BadRequest"
    assert (
        caught.value.status["message"]
        == f"requested [{listed}] without impersonating a user"
    )


def test_user_groups_uid_and_extras_are_all_taken() -> None:
    headers = [
        ("Impersonate-User", "alice"),
        ("Impersonate-Group", "team-a"),
        ("Impersonate-Group", "team-b"),
        ("Impersonate-Uid", "u-1"),
        ("Impersonate-Extra-Acme.com%2FProject", "p1"),
        ("Impersonate-Extra-Acme.com%2FProject", "p2"),
    ]

    user = impersonate(headers, PROXY, allow_all)

    assert user.username == "alice"
    assert user.uid == "u-1"
    assert user.groups == ("team-a", "team-b", "system:authenticated")
    assert dict(user.extra) == {"acme.com/project": ("p1", "p2")}


def test_a_malformed_extra_key_escape_is_kept_as_sent() -> None:
    user = impersonate(
        [("Impersonate-User", "a"), ("Impersonate-Extra-Bad%zzKey", "v")],
        PROXY,
        allow_all,
    )

    assert dict(user.extra) == {"bad%zzkey": ("v",)}


def test_system_authenticated_is_not_added_twice_nor_to_unauthenticated() -> None:
    explicit = impersonate(
        [("Impersonate-User", "a"), ("Impersonate-Group", "system:unauthenticated")],
        PROXY,
        allow_all,
    )
    anonymous = impersonate(
        [("Impersonate-User", "system:anonymous")], PROXY, allow_all
    )

    assert explicit.groups == ("system:unauthenticated",)
    assert anonymous.groups == ("system:unauthenticated",)


def test_a_service_account_gets_its_groups_and_is_checked_in_its_namespace() -> None:
    asked: list[Attributes] = []

    def record(attributes: Attributes) -> bool:
        asked.append(attributes)
        return True

    user = impersonate(
        [("Impersonate-User", "system:serviceaccount:ns1:robot")], PROXY, record
    )

    assert user.username == "system:serviceaccount:ns1:robot"
    assert user.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:ns1",
        "system:authenticated",
    )
    assert (asked[0].resource, asked[0].namespace, asked[0].name) == (
        "serviceaccounts",
        "ns1",
        "robot",
    )


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param(
            [("Impersonate-User", "bob")],
            'users "bob" is forbidden: User "kproxy" cannot impersonate resource "users" '
            'in API group "" at the cluster scope',
            id="user",
        ),
        pytest.param(
            [("Impersonate-User", "alice"), ("Impersonate-Group", "admins")],
            'groups "admins" is forbidden: User "kproxy" cannot impersonate resource '
            '"groups" in API group "" at the cluster scope',
            id="group",
        ),
        pytest.param(
            [("Impersonate-User", "alice"), ("Impersonate-Extra-Scope", "x")],
            'userextras.authentication.k8s.io "x" is forbidden: User "kproxy" cannot '
            'impersonate resource "userextras/scope" in API group '
            '"authentication.k8s.io" at the cluster scope',
            id="extra",
        ),
        pytest.param(
            [("Impersonate-User", "alice"), ("Impersonate-Uid", "7")],
            'uids.authentication.k8s.io "7" is forbidden: User "kproxy" cannot '
            'impersonate resource "uids" in API group "authentication.k8s.io" at the '
            "cluster scope",
            id="uid",
        ),
    ],
)
def test_each_impersonated_value_is_authorized_separately(
    headers: list[tuple[str, str]], message: str
) -> None:
    rules = (
        PolicyRule(
            verbs=("impersonate",), resources=("users",), resource_names=("alice",)
        ),
    )
    bindings = (Binding(rules=rules, users=("kproxy",)),)

    with pytest.raises(ApiError) as caught:
        impersonate(headers, PROXY, lambda a: is_allowed(bindings, a))

    assert caught.value.code == 403
    assert caught.value.status["message"] == message


def test_default_bindings_let_the_proxy_impersonate_any_extra() -> None:
    bindings = default_bindings("kproxy")
    headers = [("Impersonate-User", "alice"), ("Impersonate-Extra-Anything", "v")]

    user = impersonate(headers, PROXY, lambda a: is_allowed(bindings, a))

    assert dict(user.extra) == {"anything": ("v",)}


async def test_kubectl_as_and_as_group_act_as_that_user(
    apiserver: ApiServer, tmp_path: Path
) -> None:
    kubectl = Kubectl(
        write_kubeconfig(apiserver, apiserver.proxy_credentials, tmp_path)
    )
    apiserver.create(pod("p"))
    apiserver.grant(
        Binding(
            rules=(PolicyRule(verbs=("list",), resources=("pods",)),),
            groups=("viewers",),
            namespace="default",
        )
    )

    result = await kubectl(
        "get", "pods", "-o", "name", "--as=carol", "--as-group=viewers"
    )

    assert (result.returncode, result.stdout) == (0, "pod/p\n"), result.stderr
    seen = apiserver.requests[-1]
    assert seen.caller is not None
    assert seen.caller.username == "kproxy"
    assert seen.user == UserInfo(
        username="carol", groups=("viewers", "system:authenticated")
    )


async def test_kubectl_as_without_impersonation_rights_is_forbidden(
    apiserver: ApiServer, tmp_path: Path
) -> None:
    plain = apiserver.add_user(UserInfo(username="dave"))
    kubectl = Kubectl(write_kubeconfig(apiserver, plain, tmp_path))

    result = await kubectl("get", "pods", "--as=root")

    # kubectl 1.32 fails at discovery and, as against a real API server, cannot print
    # the Status its discovery client received.
    assert result.returncode == 1
    assert "Error from server (Forbidden)" in result.stderr
    assert apiserver.requests[-1].user is None


async def test_impersonation_denial_status_has_the_real_shape(
    apiserver: ApiServer, http: aiohttp.ClientSession
) -> None:
    apiserver.bindings = (
        Binding(
            rules=(PolicyRule(verbs=("impersonate",), resources=("users",)),),
            users=("kproxy",),
        ),
    )
    headers = bearer(
        apiserver.proxy_credentials,
        **{
            "Impersonate-User": "admin",
            "Impersonate-Extra-Authentication.kubernetes.io%2fcredential-id": "JTI=x",
        },
    )

    async with http.get("/api/v1/pods", headers=headers) as response:
        body = await response.json()

    assert response.status == 403
    assert response.headers["Content-Type"] == "application/json"
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'userextras.authentication.k8s.io "JTI=x" is forbidden: User "kproxy" '
        'cannot impersonate resource "userextras/authentication.kubernetes.io/'
        'credential-id" in API group "authentication.k8s.io" at the cluster scope',
        "reason": "Forbidden",
        "details": {
            "name": "JTI=x",
            "group": "authentication.k8s.io",
            "kind": "userextras",
        },
        "code": 403,
    }


async def test_recorded_headers_show_what_arrived(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    headers = bearer(
        admin, **{"Impersonate-User": "eve", "Impersonate-Group": "system:masters"}
    )

    async with http.get("/api/v1/namespaces/default/pods", headers=headers) as response:
        assert response.status == 200

    seen = apiserver.requests[-1]
    assert seen.header_values("Authorization") == [f"Bearer {admin.token}"]
    assert seen.header_values("Impersonate-User") == ["eve"]
    assert seen.user is not None
    assert seen.user.username == "eve"


async def test_impersonation_bad_request_reaches_the_client_as_a_status(
    http: aiohttp.ClientSession, admin: Credentials
) -> None:
    headers = bearer(admin, **{"Impersonate-Group": "g"})

    async with http.get("/api/v1/pods", headers=headers) as response:
        body = await response.json()

    assert response.status == 400
    assert body["kind"] == "Status"
    assert body["message"] == "requested [{Group  g    }] without impersonating a user"
