"""A real OpenID Connect provider (the npm package ``oidc-provider``) for tests.

Tests that need an identity provider import the fixtures from here into their
``conftest.py``::

    from tests.oidc.harness import oidc_provider, oidc_node_modules  # noqa: F401

``oidc_provider`` starts ``provider.mjs`` under Node.js on an ephemeral loopback port
with TLS, waits for its ready line and stops it afterwards. ``OidcProvider.restart``
starts it again on the same port, so the issuer is unchanged, optionally with another
key set: that is how key rotation is tested.

Node.js and npm are requirements of the test suite, not optional extras: when either is
missing the fixture fails with a message saying what to install, rather than skipping.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.oidc.tls import ServingCertificate, issue_serving_certificate

HERE: Final = Path(__file__).resolve().parent
PROVIDER_SCRIPT: Final = HERE / "provider.mjs"

PUBLIC_CLIENT_ID: Final = "kproxy-login"
SERVICE_CLIENT_ID: Final = "source-cluster"
SERVICE_CLIENT_SECRET: Final = "source-cluster-secret-for-tests-only"
RESOURCE: Final = "https://kproxy.test"
AUDIENCE: Final = "kproxy-target"
RESOURCE_SCOPE: Final = "cluster"

ACCOUNTS: Final[dict[str, dict[str, Any]]] = {
    "alice": {"email": "alice@uni-a.example", "groups": ["physics", "admiralty"]},
    "bob": {"email": "bob@uni-b.example", "groups": ["chemistry"]},
}

DEFAULT_TTL: Final = {
    "AccessToken": 600,
    "ClientCredentials": 600,
    "IdToken": 600,
    "RefreshToken": 3600,
    "DeviceCode": 600,
    "Interaction": 600,
    "Session": 3600,
    "Grant": 3600,
    "AuthorizationCode": 60,
}

_READY_TIMEOUT: Final = 30.0
_NPM_LOCK: Final = Path(tempfile.gettempdir()) / "kproxy-tests-oidc-npm.lock"


def signing_key(kid: str) -> dict[str, Any]:
    """A new private RSA JWK for the provider's key set."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def public_key_set(private_keys: list[dict[str, Any]]) -> dict[str, Any]:
    """The JWKS a verifier sees for ``private_keys``: only the public members."""
    public = ("kty", "kid", "use", "alg", "n", "e")
    return {"keys": [{name: key[name] for name in public} for key in private_keys]}


def _clients() -> list[dict[str, Any]]:
    return [
        {
            "client_id": PUBLIC_CLIENT_ID,
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": [
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
            ],
            "response_types": ["code"],
            # A native client's loopback redirect may use any port (RFC 8252 7.3).
            "redirect_uris": ["http://127.0.0.1/callback"],
        },
        {
            "client_id": SERVICE_CLIENT_ID,
            "client_secret": SERVICE_CLIENT_SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
        },
    ]


class OidcProvider:
    """One running ``provider.mjs``, restartable on the same port."""

    def __init__(
        self,
        workdir: Path,
        *,
        keys: list[dict[str, Any]],
        ttl: dict[str, int] | None = None,
    ) -> None:
        self.workdir = workdir
        self.keys = keys
        self.ttl = {**DEFAULT_TTL, **(ttl or {})}
        self.tls: ServingCertificate = issue_serving_certificate(workdir, name="oidc")
        self.port = 0
        self.issuer = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr_path = workdir / "provider.stderr"

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def public_keys(self) -> dict[str, Any]:
        return public_key_set(self.keys)

    def start(self) -> None:
        settings_file = self._write_settings()
        with self._stderr_path.open("ab") as stderr:
            self._process = subprocess.Popen(
                [_tool("node"), str(PROVIDER_SCRIPT), str(settings_file)],
                cwd=HERE,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        ready = self._read_ready_line()
        self.port = int(ready["port"])
        self.issuer = str(ready["issuer"])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def restart(self, *, keys: list[dict[str, Any]] | None = None) -> None:
        """Stop and start again on the same port, with ``keys`` if given."""
        self.stop()
        if keys is not None:
            self.keys = keys
        self.start()

    def _write_settings(self) -> Path:
        settings = {
            "port": self.port,
            "tls": {
                "certFile": str(self.tls.cert_file),
                "keyFile": str(self.tls.key_file),
            },
            "jwks": {"keys": self.keys},
            "clients": _clients(),
            "accounts": ACCOUNTS,
            "ttl": self.ttl,
            "cookieKey": os.urandom(16).hex(),
            "resource": {
                "indicator": RESOURCE,
                "audience": AUDIENCE,
                "scope": RESOURCE_SCOPE,
            },
        }
        path = self.workdir / "provider-settings.json"
        path.write_text(json.dumps(settings))
        path.chmod(0o600)
        return path

    def _read_ready_line(self) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdout is not None
        deadline = time.monotonic() + _READY_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=deadline - time.monotonic()):
                    break
                line = self._process.stdout.readline()
                if not line:
                    break
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("ready"):
                        return message
        self.stop()
        stderr = self._stderr_path.read_text(errors="replace")
        pytest.fail(f"oidc-provider did not become ready; its stderr:\n{stderr}")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name!r} is not on PATH: the OIDC tests run a real provider under "
            "Node.js 20 and need node and npm installed (Debian: apt-get install "
            "nodejs npm)"
        )
    return path


def _node_modules_current() -> bool:
    """Whether ``npm ci`` already installed exactly what the lock file pins."""
    installed = HERE / "node_modules" / ".package-lock.json"
    if not installed.exists():
        return False
    wanted = json.loads((HERE / "package-lock.json").read_text())["packages"]
    present = json.loads(installed.read_text())["packages"]
    return all(
        present.get(path, {}).get("version") == entry.get("version")
        for path, entry in wanted.items()
        if path
    )


def install_node_modules() -> None:
    """Run ``npm ci`` once per machine, serialised across pytest workers."""
    with _NPM_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _node_modules_current():
            return
        result = subprocess.run(
            [_tool("npm"), "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci in {HERE} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def oidc_node_modules() -> Path:
    """``tests/oidc/node_modules``, installed from the committed lock file."""
    install_node_modules()
    return HERE / "node_modules"


@pytest.fixture
def oidc_provider(
    oidc_node_modules: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OidcProvider]:
    """A running provider with one signing key, stopped after the test."""
    provider = OidcProvider(
        tmp_path_factory.mktemp("oidc"), keys=[signing_key("key-1")]
    )
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()
