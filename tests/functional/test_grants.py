"""A namespace owner's ``NamespaceGrant`` opens the namespace; deleting it closes it.

kproxy watches grants with its own credentials, so a grant created or deleted at the
API server changes kproxy's decisions within seconds, with no restart. The tests poll
with a bounded loop rather than sleeping: the watch delivers when it delivers.

A grant changes only kproxy's decision: the namespace owner also gives the mapped
groups RBAC in the namespace, here as a binding at the API server stand-in.
"""

from __future__ import annotations

from typing import Any, Final

from kproxy.standins.apiserver import Binding, PolicyRule
from kproxy.standins.apiserver.catalog import find
from kproxy.standins.federation import LocalFederation

from .clients import eventually, http_session, kubectl_for, status_of
from .conftest import pod

SHARED_PODS: Final = "/api/v1/namespaces/shared/pods"


def grant(name: str, *subjects: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "kproxy.io/v1alpha1",
        "kind": "NamespaceGrant",
        "metadata": {"name": name, "namespace": "shared"},
        "spec": {
            "subjects": list(subjects),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "pods/log"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
    }


def delete_grant(federation: LocalFederation, name: str) -> None:
    resource = find("kproxy.io", "v1alpha1", "namespacegrants")
    assert resource is not None
    federation.apiserver.store.delete(resource, "shared", name)


def give_rbac(federation: LocalFederation, group: str) -> None:
    """What the namespace owner binds next to the grant, so the API server agrees."""
    federation.apiserver.grant(
        Binding(
            rules=(PolicyRule(verbs=("get", "list", "watch"), resources=("pods",)),),
            groups=(group,),
            namespace="shared",
        )
    )


async def status_of_list(federation: LocalFederation, university: str) -> int:
    token = federation.scheduler_token(university)
    async with (
        http_session(federation, token) as session,
        session.get(SHARED_PODS) as response,
    ):
        body = await response.read()
    if response.status != 200:
        status_of(body)
    return response.status


async def becomes(federation: LocalFederation, university: str, code: int) -> None:
    async def check() -> bool:
        return await status_of_list(federation, university) == code

    await eventually(check, what=f"{university} getting {code} in 'shared'")


async def test_a_grant_opens_a_namespace_to_a_university_and_its_deletion_closes_it(
    federation: LocalFederation,
) -> None:
    federation.apiserver.create(pod("common", "shared"))
    give_rbac(federation, "beta:scheduler")
    assert await status_of_list(federation, "beta") == 403

    federation.apiserver.create(grant("open-to-beta", {"university": "beta"}))
    await becomes(federation, "beta", 200)
    kubectl = kubectl_for(
        federation, federation.scheduler_token("beta"), name="beta", namespace="shared"
    )
    listed = await kubectl("get", "pods", "-o", "name")
    refused_create = await kubectl("run", "mine", "--image=busybox")
    alpha_status = await status_of_list(federation, "alpha")

    delete_grant(federation, "open-to-beta")
    await becomes(federation, "beta", 403)

    assert listed.stdout == "pod/common\n", listed.stderr
    assert refused_create.returncode == 1
    assert 'cannot create resource "pods"' in refused_create.stderr
    assert alpha_status == 403


async def test_a_grant_names_its_rule_in_the_audit_trail(
    federation: LocalFederation,
) -> None:
    give_rbac(federation, "beta:scheduler")
    federation.apiserver.create(grant("to-the-scheduler", {"user": "beta:scheduler"}))

    await becomes(federation, "beta", 200)

    # The audit trail is written by a thread of its own, a batch at a time.
    audit_log = federation.workdir / "audit.log"

    async def recorded() -> bool:
        return '"grant shared/to-the-scheduler"' in audit_log.read_text()

    await eventually(recorded, what="the grant named in the audit log")


async def test_a_grant_for_one_university_leaves_the_others_out(
    federation: LocalFederation,
) -> None:
    give_rbac(federation, "gamma:scheduler")
    give_rbac(federation, "beta:scheduler")
    federation.apiserver.create(grant("open-to-gamma", {"university": "gamma"}))

    await becomes(federation, "gamma", 200)

    assert await status_of_list(federation, "beta") == 403
    assert await status_of_list(federation, "alpha") == 403
