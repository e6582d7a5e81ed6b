"""A whole federation per test: issuers, the API server stand-in and a running kproxy.

``federation`` serves the example policies in ``policies/`` (alpha, beta, gamma).
``workshop`` adds a test university, delta, whose scheduler may do everything kubectl
does with pods in its own namespace, so that kubectl's create, apply, delete, logs and
exec can be shown through kproxy. ``start_federation`` starts one with other options
(a copied policy directory, a different upstream credential). Starting one takes a few
hundred milliseconds, so each test gets its own and no state leaks between tests.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from kproxy.standins.federation import DEFAULT_UNIVERSITIES, LocalFederation

EXAMPLE_POLICIES: Final = Path(__file__).resolve().parents[2] / "policies"
WORKSHOP: Final = "delta"
WORKSHOP_VERBS: Final = (
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
)
DISCOVERY_URLS: Final = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/openapi/*")

StartFederation = Callable[..., Awaitable[LocalFederation]]


def workshop_policy() -> dict[str, Any]:
    """delta's file: its scheduler may work with pods in namespace delta only."""
    return {
        "apiVersion": "kproxy.io/v1alpha1",
        "kind": "UniversityPolicy",
        "metadata": {"name": WORKSHOP},
        "identities": [
            {
                "name": "scheduler",
                "issuer": "cluster",
                "serviceAccount": {"namespace": "admiralty", "name": "*"},
                "user": {"username": "{serviceAccountName}"},
            }
        ],
        "rules": [
            {
                "name": "pods",
                "namespaces": [WORKSHOP],
                "apiGroups": [""],
                "resources": ["pods", "pods/log", "configmaps"],
                "verbs": list(WORKSHOP_VERBS),
            },
            {
                "name": "exec",
                "namespaces": [WORKSHOP],
                "apiGroups": [""],
                "resources": ["pods/exec", "pods/attach", "pods/portforward"],
                "verbs": ["get", "create"],
            },
        ],
        "clusterRules": [
            {
                "name": "discovery",
                "nonResourceURLs": list(DISCOVERY_URLS),
                "verbs": ["get"],
            }
        ],
    }


def copy_policies(source: Path, target: Path) -> Path:
    """Copy the YAML policy files of ``source`` into a fresh directory ``target``."""
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.yaml")):
        (target / path.name).write_text(path.read_text())
    return target


def write_policy(directory: Path, policy: Mapping[str, Any]) -> Path:
    path = directory / f"{policy['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(dict(policy), sort_keys=False))
    return path


@pytest.fixture
async def start_federation(tmp_path: Path) -> AsyncIterator[StartFederation]:
    """Start federations with ``LocalFederation`` options; all stop after the test."""
    started: list[LocalFederation] = []

    async def start(
        *,
        policy_dir: Path = EXAMPLE_POLICIES,
        universities: Mapping[str, Sequence[str]] = DEFAULT_UNIVERSITIES,
        namespaces: Sequence[str] = ("alpha", "beta", "gamma", "shared"),
        **options: Any,
    ) -> LocalFederation:
        federation = LocalFederation(
            tmp_path / f"federation-{len(started)}",
            policy_dir=policy_dir,
            universities=dict(universities),
            namespaces=namespaces,
            **options,
        )
        started.append(federation)
        await federation.start()
        return federation

    try:
        yield start
    finally:
        for federation in reversed(started):
            await federation.stop()
        # A connection left unclosed is reported when it is collected; collecting
        # here charges it to the test that leaked it rather than a later one.
        gc.collect()


@pytest.fixture
async def federation(start_federation: StartFederation) -> LocalFederation:
    """The example universities alpha, beta and gamma, with namespace grants on."""
    return await start_federation()


@pytest.fixture
async def workshop(
    start_federation: StartFederation, tmp_path: Path
) -> LocalFederation:
    """delta, with wide rights on pods in namespace delta, next to alpha."""
    directory = tmp_path / "workshop-policies"
    directory.mkdir()
    write_policy(directory, workshop_policy())
    (directory / "alpha.yaml").write_text((EXAMPLE_POLICIES / "alpha.yaml").read_text())
    return await start_federation(
        policy_dir=directory,
        universities={WORKSHOP: ("cluster",), "alpha": ("cluster", "cilogon")},
        namespaces=(WORKSHOP, "alpha", "other"),
    )


def pod(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }
