"""What kubectl hands the plugin, and what the plugin hands back."""

from __future__ import annotations

import json

import pytest

from kproxy.login.credential import (
    Credential,
    ExecInfo,
    exec_credential,
    read_exec_info,
)
from kproxy.login.errors import LoginError


def _info(**document: object) -> dict[str, str]:
    return {"KUBERNETES_EXEC_INFO": json.dumps(document)}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, ExecInfo(interactive=True), id="run-by-hand"),
        pytest.param(
            _info(
                apiVersion="client.authentication.k8s.io/v1",
                kind="ExecCredential",
                spec={"interactive": False},
            ),
            ExecInfo(interactive=False),
            id="v1-not-interactive",
        ),
        pytest.param(
            _info(
                apiVersion="client.authentication.k8s.io/v1",
                kind="ExecCredential",
                spec={"interactive": True, "cluster": {"server": "https://k"}},
            ),
            ExecInfo(interactive=True),
            id="v1-interactive",
        ),
        pytest.param(
            _info(
                apiVersion="client.authentication.k8s.io/v1beta1",
                kind="ExecCredential",
                spec={},
            ),
            ExecInfo(
                api_version="client.authentication.k8s.io/v1beta1", interactive=False
            ),
            id="v1beta1-without-interactive",
        ),
    ],
)
def test_exec_info_is_read_as_kubectl_writes_it(
    environ: dict[str, str], expected: ExecInfo
) -> None:
    assert read_exec_info(environ) == expected


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"KUBERNETES_EXEC_INFO": "{"}, id="not-json"),
        pytest.param(_info(kind="Pod"), id="not-exec-credential"),
        pytest.param(
            _info(
                apiVersion="client.authentication.k8s.io/v1alpha1",
                kind="ExecCredential",
            ),
            id="old-version",
        ),
    ],
)
def test_malformed_exec_info_is_an_error(environ: dict[str, str]) -> None:
    with pytest.raises(LoginError, match="KUBERNETES_EXEC_INFO"):
        read_exec_info(environ)


def test_expiration_is_set_before_the_token_expires() -> None:
    credential = Credential(token="t", expires_at=1_800_000_030.0)

    document = exec_credential(
        credential, api_version="client.authentication.k8s.io/v1"
    )

    assert document == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "t", "expirationTimestamp": "2027-01-15T08:00:00Z"},
    }
