"""``kproxy serve`` refuses a bad configuration with file, line and field, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kproxy import __version__
from kproxy.cli import main

VALID_START = """\
apiVersion: kproxy.io/v1alpha1
kind: ProxyConfiguration
upstream:
  kubeconfig: upstream.kubeconfig
authentication:
  jwt:
    - issuer:
        url: https://issuer.example.edu
        audiences: [target]
      claimMappings:
        username: {claim: sub, prefix: "example:"}
federation:
  policyDirectory: policies
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("serving", "line", "field", "message"),
    [
        pytest.param(
            "serving:\n  port: 8443\n",
            14,
            "serving",
            "tls (certFile and keyFile) is required unless plainHTTP",
            id="tls-missing",
        ),
        pytest.param(
            "serving:\n  address: 0.0.0.0\n  plainHTTP: true\n",
            14,
            "serving",
            "plainHTTP is for local use only",
            id="plain-http-off-loopback",
        ),
        pytest.param(
            "serving:\n  plainHTTP: true\n  address: 127.0.0.1\n  prot: 1\n",
            17,
            "serving.prot",
            "unknown field",
            id="misspelt-field",
        ),
        pytest.param(
            "serving:\n  plainHTTP: true\n  address: 127.0.0.1\n  port: 70000\n",
            17,
            "serving.port",
            "less than or equal to 65535",
            id="port-out-of-range",
        ),
    ],
)
def test_bad_serving_settings_name_file_line_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    serving: str,
    line: int,
    field: str,
    message: str,
) -> None:
    config = write(tmp_path, VALID_START + serving)

    code = main(["serve", "--config", str(config)])

    assert code == 2
    err = capsys.readouterr().err
    assert f"{config}:{line}: {field}: " in err
    assert message in err


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        VALID_START.replace("kind: ProxyConfiguration", "kind: Proxy")
        + "serving:\n  plainHTTP: true\n  address: 127.0.0.1\n  workers: 0\n",
    )

    code = main(["serve", "--config", str(config)])

    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert any(f"{config}:2: kind: " in line for line in err)
    assert any(f"{config}:17: serving.workers: " in line for line in err)


def test_not_yaml_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "serving: [unclosed\n")

    assert main(["serve", "--config", str(config)]) == 2
    assert f"{config}:2: invalid YAML" in capsys.readouterr().err


def test_missing_file_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_duplicate_keys_are_refused_rather_than_silently_merged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, VALID_START + "federation:\n  policyDirectory: other\n")

    assert main(["serve", "--config", str(config)]) == 2
    assert f"{config}:14: federation: key 'federation' appears more than once" in (
        capsys.readouterr().err
    )


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"kproxy {__version__}\n"


def test_a_command_imports_only_its_own_module() -> None:
    # kubectl runs "kproxy login" before each request: it must not pay for the
    # proxy's server stack.
    code = (
        "import sys; from kproxy.cli import build_parser; "
        "build_parser(['login', '--help']); "
        "print(sorted(m for m in sys.modules if m.startswith(('kproxy.', 'cel'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    loaded = result.stdout
    assert "kproxy.commands.login" in loaded
    for heavy in ("kproxy.app", "kproxy.auth.expressions", "'cel'", "kproxy.running"):
        assert heavy not in loaded


def test_serve_runs_on_uvloop_when_installed() -> None:
    import asyncio

    import uvloop

    from kproxy.commands.serve import _run

    async def on_uvloop() -> int:
        return int(isinstance(asyncio.get_running_loop(), uvloop.Loop))

    assert _run(on_uvloop()) == 1
