"""The container image's recipe: linted, pinned, unprivileged, read-only friendly."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Final

from tests.deploy.rendering import ROOT

DOCKERFILE: Final = ROOT / "Dockerfile"
HADOLINT: Final = ROOT / ".venv" / "bin" / "hadolint"


def instructions(stage: int | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if stage is None:
        return pairs
    starts = [i for i, (name, _) in enumerate(pairs) if name == "FROM"]
    bounds = [*starts, len(pairs)]
    return (
        pairs[bounds[stage] : bounds[stage + 1]] if stage >= 0 else pairs[starts[-1] :]
    )


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_wheels_are_built_against_the_pinned_constraints() -> None:
    (run,) = [args for name, args in instructions(0) if name == "RUN"]

    assert "pip wheel" in run
    assert "--constraint constraints.txt" in run
    assert instructions(0)[0][1].endswith("AS wheels")


def test_every_runtime_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }

    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!\[; ]", requirement, maxsplit=1)[0].lower()
        assert name.replace("_", "-") in pinned, requirement


def test_the_final_stage_is_slim_unprivileged_and_writes_no_bytecode() -> None:
    final = instructions(-1)
    values = dict(final)

    assert final[0][1] == "${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    assert re.fullmatch(r"\d+:\d+", values["USER"])
    assert not values["USER"].startswith("0:")
    assert "PYTHONDONTWRITEBYTECODE=1" in values["ENV"]
    assert "--no-index" in values["RUN"]
    assert "COPY" not in values, "no build context reaches the final image"


def test_it_serves_the_mounted_configuration_on_the_documented_ports() -> None:
    values = dict(instructions(-1))

    assert values["ENTRYPOINT"] == '["kproxy"]'
    assert values["CMD"] == '["serve", "--config", "/etc/kproxy/config.yaml"]'
    assert values["EXPOSE"].split() == ["8443", "8081"]


def test_the_build_context_holds_only_what_the_image_is_built_from() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        included = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
                included = negated
        return included

    copied = [
        source
        for name, args in instructions(0)
        if name == "COPY"
        for source in args.split()[:-1]
    ]
    assert copied
    assert all(sent(source) for source in copied)
    assert all(sent(path) for path in ("kproxy/app.py", "pyproject.toml"))
    for private in (
        ".venv/bin/python",
        "tests/observe/conftest.py",
        ".git/config",
        "deploy",
    ):
        assert not sent(private), private
    assert not sent("kproxy/__pycache__/app.cpython-311.pyc")


def test_the_image_does_not_ship_the_repository(tmp_path: Path) -> None:
    copied = [args for name, args in instructions(0) if name == "COPY"]

    assert not any(args.split()[0] == "." for args in copied)
