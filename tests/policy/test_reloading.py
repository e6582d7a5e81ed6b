"""Reloading the policy directory, including a ConfigMap's ``..data`` swap."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from kproxy.errors import ConfigError
from kproxy.policy.attributes import parse_request
from kproxy.policy.reloading import PolicyStore
from kproxy.policy.settings import FederationSettings
from tests.policy.conftest import ALPHA_CLUSTER, EXAMPLES, service_account_identity

SCHEDULER = service_account_identity(ALPHA_CLUSTER)
PODS = parse_request("GET", "/api/v1/namespaces/alpha/pods", "")


class RecordedEvents:
    def __init__(self) -> None:
        self.reloads: list[tuple[str, bool]] = []
        self.syncs: list[bool] = []

    def policy_reload(self, university: str, *, ok: bool) -> None:
        self.reloads.append((university, ok))

    def grants_synced(self, *, ok: bool) -> None:
        self.syncs.append(ok)


def _settings(settings: FederationSettings, directory: Path) -> FederationSettings:
    return settings.model_copy(update={"policy_directory": str(directory)})


def _write_configmap(mount: Path, version: str, files: dict[str, str]) -> None:
    """Lay files out the way the kubelet does, then swap ``..data`` atomically."""
    target = mount / f"..{version}"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    link = mount / "..data_tmp"
    link.symlink_to(target.name)
    os.replace(link, mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")


def _examples() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(EXAMPLES.glob("*.yaml"))}


def test_a_broken_file_at_start_stops_with_file_line_and_field(
    tmp_path: Path, settings: FederationSettings
) -> None:
    (tmp_path / "alpha.yaml").write_text(
        (EXAMPLES / "alpha.yaml").read_text().replace("verbs: [list]", "verbs: [lists]")
    )
    with pytest.raises(ConfigError) as raised:
        PolicyStore(_settings(settings, tmp_path), base_dir=tmp_path)
    problem = raised.value.problems[0]
    assert problem.file.endswith("alpha.yaml")
    assert problem.field == "rules[3].verbs[0]"
    assert problem.line is not None
    assert problem.line > 50


def test_a_configmap_swap_is_applied_and_a_broken_update_keeps_the_last_good_policy(
    tmp_path: Path, settings: FederationSettings
) -> None:
    files = _examples()
    _write_configmap(tmp_path, "v1", files)
    events = RecordedEvents()
    store = PolicyStore(_settings(settings, tmp_path), base_dir=tmp_path, events=events)
    assert store.current.decide(SCHEDULER, PODS).allowed
    assert sorted(events.reloads) == [("alpha", True), ("beta", True), ("gamma", True)]
    assert store.poll() is False

    narrowed = dict(
        files,
        **{
            "alpha.yaml": files["alpha.yaml"].replace(
                "resources: [pods]\n", "resources: [nodes]\n"
            )
        },
    )
    _write_configmap(tmp_path, "v2", narrowed)
    before = store.current
    assert store.poll() is True
    assert store.current is not before
    assert not store.current.decide(SCHEDULER, PODS).allowed
    assert events.reloads[-1] == ("alpha", True)

    broken = dict(files, **{"alpha.yaml": "apiVersion: [unclosed\n"})
    _write_configmap(tmp_path, "v3", broken)
    kept = store.current
    assert store.poll() is False
    assert store.current is kept
    assert events.reloads[-1] == ("alpha", False)
    assert not store.current.decide(SCHEDULER, PODS).allowed

    _write_configmap(tmp_path, "v4", files)
    assert store.poll() is True
    assert store.current.decide(SCHEDULER, PODS).allowed


def test_a_broken_update_is_logged_as_a_warning(
    tmp_path: Path, settings: FederationSettings, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(EXAMPLES / "alpha.yaml", tmp_path / "alpha.yaml")
    store = PolicyStore(_settings(settings, tmp_path), base_dir=tmp_path)
    (tmp_path / "alpha.yaml").write_text("kind: UniversityPolicy\n")
    store.poll()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "apiVersion: required field is missing" in message for message in warnings
    )
    assert store.current.decide(SCHEDULER, PODS).allowed


def test_removing_a_file_revokes_its_university(
    tmp_path: Path, settings: FederationSettings
) -> None:
    shutil.copy(EXAMPLES / "alpha.yaml", tmp_path / "alpha.yaml")
    store = PolicyStore(_settings(settings, tmp_path), base_dir=tmp_path)
    (tmp_path / "alpha.yaml").unlink()
    assert store.poll() is True
    assert (
        store.current.decide(SCHEDULER, PODS).decided_by
        == "no university admits this identity"
    )


def test_a_second_file_for_the_same_university_is_refused(
    tmp_path: Path, settings: FederationSettings
) -> None:
    shutil.copy(EXAMPLES / "alpha.yaml", tmp_path / "alpha.yaml")
    store = PolicyStore(_settings(settings, tmp_path), base_dir=tmp_path)
    events = RecordedEvents()
    store.events = events
    shutil.copy(EXAMPLES / "alpha.yaml", tmp_path / "alpha-copy.yaml")
    assert store.poll() is False
    assert events.reloads == [("alpha-copy", False)]


async def test_the_background_task_applies_a_change(
    tmp_path: Path, settings: FederationSettings
) -> None:
    shutil.copy(EXAMPLES / "alpha.yaml", tmp_path / "alpha.yaml")
    store = PolicyStore(
        _settings(settings, tmp_path), base_dir=tmp_path, poll_interval=0.01
    )
    task = asyncio.create_task(store.run(), name="policy-reload-test")
    try:
        (tmp_path / "alpha.yaml").unlink()
        for _ in range(500):
            if not store.current.universities:
                break
            await asyncio.sleep(0.01)
        assert not store.current.universities
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
