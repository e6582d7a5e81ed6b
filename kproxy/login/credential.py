"""The client-go exec credential protocol, from the plugin's side.

kubectl runs the plugin with ``KUBERNETES_EXEC_INFO`` set to an ``ExecCredential``
whose ``spec.interactive`` says whether a person is at the terminal, and reads one
``ExecCredential`` from stdout. Its ``status.expirationTimestamp`` is when kubectl
stops reusing the token and runs the plugin again; it is set ``EXPIRY_MARGIN`` before
the token's real expiry, so a request sent just before the end does not arrive at the
API server after it.

Run by hand, without ``KUBERNETES_EXEC_INFO``, the plugin assumes a person is there:
that is how someone logs in ahead of a non-interactive kubectl.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kproxy.login.errors import LoginError

EXEC_INFO_VARIABLE: Final = "KUBERNETES_EXEC_INFO"
API_VERSION: Final = "client.authentication.k8s.io/v1"
SUPPORTED_API_VERSIONS: Final = (API_VERSION, "client.authentication.k8s.io/v1beta1")
EXPIRY_MARGIN: Final = 30.0


@dataclass(frozen=True, slots=True)
class ExecInfo:
    """What kubectl told the plugin about this run."""

    api_version: str = API_VERSION
    interactive: bool = True


@dataclass(frozen=True, slots=True)
class Credential:
    """A bearer token and when it stops being valid, in seconds since the epoch."""

    token: str
    expires_at: float


def read_exec_info(environ: Mapping[str, str]) -> ExecInfo:
    """Parse ``KUBERNETES_EXEC_INFO``; raises ``LoginError`` if it is malformed."""
    raw = environ.get(EXEC_INFO_VARIABLE)
    if not raw:
        return ExecInfo()
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise LoginError(f"{EXEC_INFO_VARIABLE} is not JSON") from exc
    if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
        raise LoginError(f"{EXEC_INFO_VARIABLE} is not an ExecCredential")
    api_version = document.get("apiVersion")
    if api_version not in SUPPORTED_API_VERSIONS:
        raise LoginError(
            f"{EXEC_INFO_VARIABLE} asks for {api_version!r}; kproxy speaks "
            f"{', '.join(SUPPORTED_API_VERSIONS)}"
        )
    spec = document.get("spec") or {}
    return ExecInfo(
        api_version=api_version, interactive=spec.get("interactive") is True
    )


def exec_credential(credential: Credential, *, api_version: str) -> dict[str, Any]:
    """The ``ExecCredential`` kubectl reads from the plugin's stdout."""
    expiry = datetime.datetime.fromtimestamp(
        credential.expires_at - EXPIRY_MARGIN, tz=datetime.UTC
    )
    return {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {
            "token": credential.token,
            "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
