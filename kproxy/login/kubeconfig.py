"""Kubeconfig files that reach a target cluster through kproxy.

Two kinds of caller, two kinds of user entry:

- A controller in a source cluster (an Admiralty ``Target``) runs with a projected
  service-account token whose audience is the target's kproxy. client-go's ``tokenFile``
  re-reads that file as the kubelet rotates it, so the kubeconfig names the file, not
  the token: nothing long-lived is copied anywhere.
- A person runs kubectl, which runs ``kproxy login`` as an exec credential plugin
  (``client.authentication.k8s.io/v1``) with the flags the kubeconfig was written with.

The file holds no secret of its own in either case, but it is written 0600 all the
same, atomically, because people put static tokens into such files by hand later.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from kproxy.login.credential import API_VERSION
from kproxy.login.errors import KubeconfigError
from kproxy.login.settings import LoginSettings, login_arguments

InteractiveMode = Literal["Never", "IfAvailable", "Always"]

INSTALL_HINT: Final = (
    "kubectl runs 'kproxy login' to log you in: install kproxy (pip install kproxy) "
    "and make sure 'kproxy' is on PATH"
)


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """Where kproxy listens and how to trust its serving certificate."""

    server: str
    certificate_authority: Path | None = None
    embed_certificate_authority: bool = False
    tls_server_name: str = ""


@dataclass(frozen=True, slots=True)
class TokenFileUser:
    """A bearer token read from a file that something else keeps fresh."""

    token_file: str


@dataclass(frozen=True, slots=True)
class ExecUser:
    """A credential plugin command kubectl runs for each new token."""

    command: str
    arguments: tuple[str, ...]
    interactive_mode: InteractiveMode = "IfAvailable"


def login_user(
    settings: LoginSettings,
    *,
    command: str = "kproxy",
    interactive_mode: InteractiveMode = "IfAvailable",
) -> ExecUser:
    """The exec user that runs ``kproxy login`` with ``settings``.

    Paths are made absolute, because kubectl runs the plugin from whatever directory
    the person happens to be in.
    """
    absolute = replace(
        settings,
        issuer_ca_file=_absolute(settings.issuer_ca_file),
        cache_dir=_absolute(settings.cache_dir),
    )
    return ExecUser(
        command=command,
        arguments=("login", *login_arguments(absolute)),
        interactive_mode=interactive_mode,
    )


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().absolute()


def build_kubeconfig(
    *,
    name: str,
    cluster: ClusterAccess,
    user: TokenFileUser | ExecUser,
    namespace: str = "",
) -> dict[str, Any]:
    """A ``kind: Config`` document with one cluster, user and context, all ``name``.

    Raises ``KubeconfigError`` for a server that is not https, a relative token file
    or a certificate authority that cannot be read as PEM certificates.
    """
    context: dict[str, str] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": _cluster_entry(cluster)}],
        "users": [{"name": name, "user": _user_entry(user)}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
        "preferences": {},
    }


def _cluster_entry(cluster: ClusterAccess) -> dict[str, Any]:
    server = urlsplit(cluster.server)
    if server.scheme != "https" or not server.hostname:
        raise KubeconfigError(f"--server {cluster.server!r} is not an https URL")
    entry: dict[str, Any] = {"server": cluster.server}
    if cluster.tls_server_name:
        entry["tls-server-name"] = cluster.tls_server_name
    authority = cluster.certificate_authority
    if authority is None:
        if cluster.embed_certificate_authority:
            raise KubeconfigError("--embed-certs needs --certificate-authority")
        return entry
    pem = _read_certificates(authority)
    if cluster.embed_certificate_authority:
        entry["certificate-authority-data"] = base64.b64encode(pem).decode()
    else:
        entry["certificate-authority"] = str(authority.expanduser().absolute())
    return entry


def _read_certificates(path: Path) -> bytes:
    try:
        pem = path.expanduser().read_bytes()
        x509.load_pem_x509_certificates(pem)
    except OSError as exc:
        raise KubeconfigError(
            f"cannot read --certificate-authority {str(path)!r}"
        ) from exc
    except ValueError as exc:
        raise KubeconfigError(
            f"--certificate-authority {str(path)!r} holds no PEM certificate"
        ) from exc
    return pem


def _user_entry(user: TokenFileUser | ExecUser) -> dict[str, Any]:
    if isinstance(user, TokenFileUser):
        # The path is where the token is inside the pod that uses this file, so it
        # cannot be resolved here; a relative one would depend on kubectl's cwd.
        if not user.token_file.startswith("/"):
            raise KubeconfigError(f"--token-file {user.token_file!r} is not absolute")
        return {"tokenFile": user.token_file}
    return {
        "exec": {
            "apiVersion": API_VERSION,
            "command": user.command,
            "args": list(user.arguments),
            "interactiveMode": user.interactive_mode,
            # The plugin needs nothing from the cluster entry, so none is passed.
            "provideClusterInfo": False,
            "installHint": INSTALL_HINT,
        }
    }


def render_kubeconfig(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def write_kubeconfig(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    directory = path.parent
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise KubeconfigError(f"cannot write in {str(directory)!r}: {exc}") from exc
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
