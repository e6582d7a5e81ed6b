"""``docs/federation.md`` works as written: every command in it runs, in order.

The guide's marked blocks (see ``tests.onboarding.guide``) are run against a loopback
federation in which Delta is in the guardrails but has no policy file yet, exactly as
on the day the operator has trusted Delta's cluster. The guide's table of variables
and of what the stand-ins do instead of a real cluster is what this test implements.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from kproxy.auth.identity import UserInfo
from kproxy.config import load_configuration
from kproxy.standins.apiserver import ApiServer, Binding, PolicyRule, catalog
from kproxy.standins.federation import DEFAULT_UNIVERSITIES, LocalFederation
from tests.onboarding.conftest import StartFederation
from tests.onboarding.guide import GUIDE, Step, read_guide
from tests.onboarding.projected import ProjectedTokenVolume
from tests.onboarding.running import run

REPOSITORY: Final = GUIDE.parents[1]
GUIDE_ISSUER: Final = "https://k8s.delta.example.edu"
UNIVERSITY: Final = "delta"
SCIENTIST_NAMESPACE: Final = "lab-7"
RETRY_SECONDS: Final = 30.0
SCHEDULER: Final = "delta:admiralty:multicluster-scheduler"


@pytest.fixture
async def source_cluster() -> AsyncIterator[ApiServer]:
    """Delta's own cluster, where Admiralty runs and reads its Secrets."""
    apiserver = ApiServer()
    await apiserver.start()
    apiserver.create(_namespace(UNIVERSITY))
    try:
        yield apiserver
    finally:
        await apiserver.stop()


@dataclass
class GuideRun:
    """The reader's shell: a working directory, the variables, and what was learnt."""

    federation: LocalFederation
    workdir: Path
    variables: dict[str, str]
    excerpt: dict[str, Any] = field(default_factory=dict)

    async def step(self, step: Step) -> None:
        where = f"docs/federation.md line {step.line}"
        if step.kind == "file":
            path = self.workdir / step.argument
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(step.body)
        elif step.kind == "run":
            await self._run(step, where, retry=step.argument == "retry")
        elif step.kind == "apply-rbac":
            assert f"apply -f {step.argument}" in step.body, where
            objects = yaml.safe_load_all((self.workdir / step.argument).read_text())
            self.federation.apply_rbac([obj for obj in objects if obj])
        elif step.kind == "config-excerpt":
            self.excerpt = yaml.safe_load(step.body)
            _check_excerpt(self.excerpt, self.federation, self.workdir)
        else:
            self._mount_token(self.workdir / step.argument)

    async def _run(self, step: Step, where: str, *, retry: bool) -> None:
        assert step.language == "sh", where
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (RETRY_SECONDS if retry else 0.0)
        while True:
            result = await run(
                "bash", "-euo", "pipefail", "-c", step.body,
                cwd=self.workdir, env=self.variables,
            )  # fmt: skip
            if result.returncode == 0 or loop.time() >= deadline:
                break
            await asyncio.sleep(0.5)
        assert result.returncode == 0, (
            f"{where}:\n{step.body}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )

    def _mount_token(self, volume_file: Path) -> None:
        """Do the kubelet's part: mint the token the volume asks for and write it."""
        source = _token_source(yaml.safe_load(volume_file.read_text()))
        (entry,) = self.excerpt["authentication"]["jwt"]
        # The volume asks for the audience the operator configured; the stand-ins
        # run with their own, which the minted token carries.
        assert source["audience"] in entry["issuer"]["audiences"]
        volume = ProjectedTokenVolume(
            Path(self.variables["TOKEN_DIR"]), path=source["path"]
        )
        volume.write(self.federation.scheduler_token(UNIVERSITY))


def _token_source(patch: Mapping[str, Any]) -> Mapping[str, Any]:
    volumes = patch["spec"]["template"]["spec"]["volumes"]
    (source,) = (
        source["serviceAccountToken"]
        for volume in volumes
        for source in volume["projected"]["sources"]
    )
    return source  # type: ignore[no-any-return]


def _check_excerpt(
    excerpt: Mapping[str, Any], federation: LocalFederation, workdir: Path
) -> None:
    """The guide's configuration is valid and is what the federation runs with.

    The running configuration's Delta issuer is swapped for the guide's entry and
    university, and the result must load; the claim mappings and prefixes the guide
    shows must be the ones the running kproxy uses.
    """
    running = yaml.safe_load(federation.config_file.read_text())
    stand_in_url = federation.issuer_url(UNIVERSITY)
    (guide_entry,) = excerpt["authentication"]["jwt"]
    guide_university = excerpt["federation"]["universities"][UNIVERSITY]
    (running_entry,) = (
        entry
        for entry in running["authentication"]["jwt"]
        if entry["issuer"]["url"] == stand_in_url
    )

    assert guide_entry["issuer"]["url"] == GUIDE_ISSUER
    assert guide_entry["claimMappings"] == running_entry["claimMappings"]
    running_university = running["federation"]["universities"][UNIVERSITY]
    assert guide_university == {
        **running_university,
        "issuers": {"cluster": GUIDE_ISSUER},
    }

    running["authentication"]["jwt"].remove(running_entry)
    running["authentication"]["jwt"].append(guide_entry)
    running["federation"]["universities"][UNIVERSITY] = guide_university
    combined = federation.config_file.with_name("config-with-guide.yaml")
    combined.write_text(yaml.safe_dump(running, sort_keys=False))
    load_configuration(combined)


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _kubeconfig(apiserver: ApiServer, user: UserInfo, path: Path) -> Path:
    credentials = apiserver.add_user(user)
    path.write_text(yaml.safe_dump(apiserver.kubeconfig(credentials)))
    path.chmod(0o600)
    return path


def _scientist(federation: LocalFederation, path: Path) -> Path:
    """A target user who may do anything in their own namespace, nothing elsewhere."""
    federation.apiserver.grant(
        Binding(
            rules=(PolicyRule(verbs=("*",), api_groups=("*",), resources=("*",)),),
            users=("carol",),
            namespace=SCIENTIST_NAMESPACE,
        )
    )
    return _kubeconfig(federation.apiserver, UserInfo(username="carol"), path)


def _variables(
    federation: LocalFederation, source: ApiServer, workdir: Path
) -> dict[str, str]:
    masters = ("system:masters",)
    operator = UserInfo(username="operator", groups=masters)
    source_admin = UserInfo(username="delta-admin", groups=masters)
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "KPROXY_URL": federation.url,
        "KPROXY_CA": str(federation.ca_file),
        "KPROXY_CONFIG": str(federation.config_file),
        "POLICIES": str(federation.policy_dir),
        "DELTA_ISSUER": federation.issuer_url(UNIVERSITY),
        "TARGET_KUBECONFIG": str(
            _kubeconfig(federation.apiserver, operator, workdir / "target-admin")
        ),
        "SOURCE_KUBECONFIG": str(
            _kubeconfig(source, source_admin, workdir / "source-admin")
        ),
        "SCIENTIST_KUBECONFIG": str(_scientist(federation, workdir / "scientist")),
        "TOKEN_DIR": str(workdir / "var-run-secrets-kproxy-target"),
    }


# Some thirty processes in sequence, each kproxy command importing the whole package:
# twice the suite's per-test limit leaves room for a loaded machine.
@pytest.mark.timeout(120)
async def test_every_command_of_the_federation_guide_works_as_written(
    start_federation: StartFederation, source_cluster: ApiServer, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPOSITORY / "policies", policies)
    federation = await start_federation(
        policy_dir=policies,
        universities={**DEFAULT_UNIVERSITIES, UNIVERSITY: ("cluster",)},
        namespaces=("alpha", "beta", "gamma", SCIENTIST_NAMESPACE),
    )
    workdir = tmp_path / "reader"
    workdir.mkdir()
    reader = GuideRun(
        federation, workdir, _variables(federation, source_cluster, tmp_path)
    )

    steps, _ = read_guide(GUIDE.read_text())
    for step in steps:
        await reader.step(step)

    # What the guide's last steps did, seen at the two API servers.
    secrets = catalog.find("", "v1", "secrets")
    assert secrets is not None
    secret = source_cluster.store.get(secrets, UNIVERSITY, "kproxy-target")
    assert "config" in secret["data"]
    listed = [
        request
        for request in federation.apiserver.requests
        if request.path.endswith(f"/namespaces/{SCIENTIST_NAMESPACE}/podchaperons")
    ]
    assert listed
    assert {tuple(r.header_values("Impersonate-User")) for r in listed} == {
        (SCHEDULER,)
    }
    assert (policies / "delta.yaml").read_text() == (
        workdir / "drafts/delta.yaml"
    ).read_text()


def test_every_shell_block_of_the_guide_is_run_by_the_test() -> None:
    steps, blocks = read_guide(GUIDE.read_text())

    unmarked_shell = [
        block.line for block in blocks if block.language == "sh" and not block.marked
    ]
    assert unmarked_shell == []
    assert [step.kind for step in steps].count("run") >= 8
    kubelet = [step for step in steps if step.kind == "kubelet"]
    assert [step.argument for step in kubelet] == ["token-volume.yaml"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- rnu -->\n```sh\ntrue\n```\n", "unknown marker 'rnu'"),
        ("<!-- run -->\nsome words\n```sh\ntrue\n```\n", "not before a block"),
    ],
    ids=["misspelt-marker", "marker-away-from-its-block"],
)
def test_a_broken_marker_is_an_error_rather_than_a_skipped_command(
    text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        read_guide(text)
