"""kubectl 1.32 through kproxy, with a token from a trusted source-cluster issuer.

delta's scheduler may work with pods in namespace delta (see ``conftest.py``); every
command below is the real kubectl speaking TLS to kproxy, which forwards to the API
server stand-in as ``delta:multicluster-scheduler``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kproxy.standins.federation import LocalFederation

from .clients import Kubectl, kubectl_for, read_line
from .conftest import WORKSHOP, pod


@pytest.fixture
def kubectl(workshop: LocalFederation) -> Kubectl:
    token = workshop.scheduler_token(WORKSHOP)
    return kubectl_for(workshop, token, name="delta", namespace=WORKSHOP)


async def test_kubectl_lists_pods_in_its_namespace(
    workshop: LocalFederation, kubectl: Kubectl
) -> None:
    workshop.apiserver.create(pod("web-1", WORKSHOP))
    workshop.apiserver.create(pod("elsewhere", "other"))

    table = await kubectl("get", "pods")
    listed = await kubectl("get", "pods", "-o", "json")

    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "READY", "STATUS"]
    assert row.split()[0] == "web-1"
    assert [i["metadata"]["name"] for i in listed.json()["items"]] == ["web-1"]


async def test_kubectl_watch_prints_events_until_it_is_stopped(
    workshop: LocalFederation, kubectl: Kubectl
) -> None:
    workshop.apiserver.create(pod("first", WORKSHOP))

    async with kubectl.running("get", "pods", "-w", "-o", "name") as watch:
        first = await read_line(watch)
        workshop.apiserver.create(pod("second", WORKSHOP))
        second = await read_line(watch)
        workshop.apiserver.create(pod("third", WORKSHOP))
        third = await read_line(watch)

    assert [first, second, third] == ["pod/first\n", "pod/second\n", "pod/third\n"]


async def test_kubectl_creates_applies_a_change_and_deletes_a_pod(
    workshop: LocalFederation, kubectl: Kubectl, tmp_path: Path
) -> None:
    created_manifest = tmp_path / "created.json"
    created_manifest.write_text(json.dumps(pod("made", WORKSHOP, tier="one")))
    applied_manifest = tmp_path / "applied.json"
    applied_manifest.write_text(json.dumps(pod("applied", WORKSHOP, tier="one")))

    created = await kubectl("create", "-f", str(created_manifest))
    applied = await kubectl("apply", "-f", str(applied_manifest))
    applied_manifest.write_text(json.dumps(pod("applied", WORKSHOP, tier="two")))
    changed = await kubectl("apply", "-f", str(applied_manifest))
    fetched = await kubectl("get", "pod", "applied", "-o", "json")
    deleted = await kubectl("delete", "pod", "made", "applied", "--wait=false")
    remaining = await kubectl("get", "pods", "-o", "json")

    assert created.returncode == 0, created.stderr
    assert created.stdout == "pod/made created\n"
    assert applied.stdout == "pod/applied created\n", applied.stderr
    assert changed.stdout == "pod/applied configured\n", changed.stderr
    assert fetched.json()["metadata"]["labels"] == {"tier": "two"}
    assert deleted.returncode == 0, deleted.stderr
    assert remaining.json()["items"] == []


async def test_kubectl_logs_follow_streams_lines_appended_later(
    workshop: LocalFederation, kubectl: Kubectl
) -> None:
    workshop.apiserver.create(pod("logger", WORKSHOP))
    workshop.apiserver.append_log(WORKSHOP, "logger", "one\n")

    async with kubectl.running("logs", "-f", "logger") as follow:
        lines = [await read_line(follow)]
        for text in ("two\n", "three\n"):
            workshop.apiserver.append_log(WORKSHOP, "logger", text)
            lines.append(await read_line(follow))

    assert lines == ["one\n", "two\n", "three\n"]


async def test_kubectl_exec_runs_a_command_as_the_mapped_user(
    workshop: LocalFederation, kubectl: Kubectl
) -> None:
    workshop.apiserver.create(pod("shell", WORKSHOP))

    echoed = await kubectl("exec", "shell", "--", "echo", "hi")
    whoami = await kubectl("exec", "shell", "--", "whoami")

    assert echoed.returncode == 0, echoed.stderr
    assert echoed.stdout == "hi\n"
    assert whoami.stdout == "delta:multicluster-scheduler\n"


async def test_kubectl_exec_passes_stdin_through(
    workshop: LocalFederation, kubectl: Kubectl
) -> None:
    workshop.apiserver.create(pod("shell", WORKSHOP))
    text = "".join(f"line {n}\n" for n in range(200))

    result = await kubectl("exec", "-i", "shell", "--", "cat", stdin=text.encode())

    assert result.returncode == 0, result.stderr
    assert result.stdout == text


async def test_kubectl_is_refused_outside_its_namespace(
    workshop: LocalFederation, kubectl: Kubectl
) -> None:
    workshop.apiserver.create(pod("elsewhere", "other"))

    listed = await kubectl("get", "pods", "-n", "other")
    executed = await kubectl("exec", "-n", "other", "elsewhere", "--", "echo", "hi")

    assert listed.returncode == 1
    assert listed.stderr.startswith("Error from server (Forbidden): ")
    assert 'cannot list resource "pods"' in listed.stderr
    assert "no rule matched" in listed.stderr
    assert executed.returncode == 1
    assert "Forbidden" in executed.stderr
    assert "hi" not in executed.stdout
