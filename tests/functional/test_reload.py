"""Policy edits take effect in a running kproxy without a restart or a dropped watch.

Two ways a policy directory changes in practice: a file rewritten in place, and a
mounted ConfigMap, where the kubelet writes a new timestamped directory and swaps the
``..data`` symbolic link in one rename. Each test keeps a kubectl watch open across the
edit, waits (with a bounded poll) until one university gained a right and another lost
one, and then checks that the watch still delivers events.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml

from kproxy.standins.apiserver import Binding, PolicyRule
from kproxy.standins.federation import LocalFederation

from .clients import eventually, http_session, kubectl_for, read_line
from .conftest import EXAMPLE_POLICIES, StartFederation, copy_policies

GROUP: Final = "multicluster.admiralty.io"
SHARED_CHAPERONS: Final = f"/apis/{GROUP}/v1alpha1/namespaces/shared/podchaperons"
SUMMARIES: Final = f"/apis/{GROUP}/v1alpha1/clustersummaries"
FILES: Final = ("alpha.yaml", "beta.yaml", "gamma.yaml")


def chaperon(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "PodChaperon",
        "metadata": {"name": name, "namespace": "alpha"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def edit(policies: dict[str, dict[str, Any]]) -> None:
    """beta may list podchaperons in 'shared'; alpha no longer lists summaries."""
    policies["beta.yaml"]["rules"].append(
        {
            "name": "shared-chaperons",
            "identities": ["scheduler"],
            "namespaces": ["shared"],
            "apiGroups": [GROUP],
            "resources": ["podchaperons"],
            "verbs": ["list"],
        }
    )
    alpha = policies["alpha.yaml"]
    alpha["clusterRules"] = [
        rule for rule in alpha["clusterRules"] if rule["name"] != "cluster-summaries"
    ]


def edited_documents() -> dict[str, str]:
    policies = {
        name: yaml.safe_load((EXAMPLE_POLICIES / name).read_text()) for name in FILES
    }
    edit(policies)
    return {name: yaml.safe_dump(policies[name], sort_keys=False) for name in FILES}


async def status(federation: LocalFederation, university: str, path: str) -> int:
    token = federation.scheduler_token(university)
    async with http_session(federation, token) as session, session.get(path) as answer:
        await answer.read()
    return answer.status


async def assert_edit_applies_under_an_open_watch(
    federation: LocalFederation, apply_edit: Callable[[], None]
) -> None:
    federation.apiserver.grant(
        Binding(
            rules=(
                PolicyRule(
                    verbs=("list",), api_groups=(GROUP,), resources=("podchaperons",)
                ),
            ),
            groups=("beta:scheduler",),
            namespace="shared",
        )
    )
    assert await status(federation, "beta", SHARED_CHAPERONS) == 403
    assert await status(federation, "alpha", SUMMARIES) == 200
    token = federation.scheduler_token("alpha")
    kubectl = kubectl_for(federation, token, name="alpha", namespace="alpha")
    federation.apiserver.create(chaperon("before"))

    async with kubectl.running("get", "podchaperons", "-w", "-o", "name") as watch:
        before = await read_line(watch)
        apply_edit()

        async def applied() -> bool:
            beta, alpha = await asyncio.gather(
                status(federation, "beta", SHARED_CHAPERONS),
                status(federation, "alpha", SUMMARIES),
            )
            return (beta, alpha) == (200, 403)

        await eventually(applied, what="the policy edit")
        federation.apiserver.create(chaperon("after"))
        after = await read_line(watch)

    assert before == "podchaperon.multicluster.admiralty.io/before\n"
    assert after == "podchaperon.multicluster.admiralty.io/after\n"


async def test_a_rewritten_policy_file_applies_without_dropping_a_watch(
    start_federation: StartFederation, tmp_path: Path
) -> None:
    directory = copy_policies(EXAMPLE_POLICIES, tmp_path / "policies")
    federation = await start_federation(policy_dir=directory)

    def rewrite() -> None:
        for name, text in edited_documents().items():
            (directory / name).write_text(text)

    await assert_edit_applies_under_an_open_watch(federation, rewrite)


def configmap_volume(directory: Path, documents: dict[str, str], version: str) -> None:
    """Lay files out as the kubelet does for a ConfigMap, then swap ``..data``."""
    timestamped = directory / f"..2026_01_01_00_00_0{version}.000000001"
    timestamped.mkdir()
    for name, text in documents.items():
        (timestamped / name).write_text(text)
    swap = directory / "..data_tmp"
    swap.symlink_to(timestamped.name)
    previous = directory / "..data"
    old = os.readlink(previous) if previous.is_symlink() else None
    os.replace(swap, previous)
    for name in documents:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    if old is not None:
        for path in (directory / old).iterdir():
            path.unlink()
        (directory / old).rmdir()


async def test_a_configmap_data_swap_applies_without_dropping_a_watch(
    start_federation: StartFederation, tmp_path: Path
) -> None:
    directory = tmp_path / "mounted"
    directory.mkdir()
    original = {name: (EXAMPLE_POLICIES / name).read_text() for name in FILES}
    configmap_volume(directory, original, "1")
    federation = await start_federation(policy_dir=directory)

    await assert_edit_applies_under_an_open_watch(
        federation, lambda: configmap_volume(directory, edited_documents(), "2")
    )
