"""The one HTTP client the login uses to talk to an identity provider.

An authlib ``OAuth2Session`` (itself a ``requests`` session) with two rules added:

- TLS is verified against the bundle the settings name, or the system's. ``requests``
  lets ``REQUESTS_CA_BUNDLE`` from the environment replace a session-wide ``verify``,
  so the bundle is passed on every request instead.
- Every request has a timeout, so a silent provider cannot hang kubectl.

Failures of the transport and of the OAuth protocol are wrapped into ``LoginError``
here, so the flows above never see a ``requests`` or authlib exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session

from kproxy.login.errors import LoginError
from kproxy.login.settings import LoginSettings

REQUEST_TIMEOUT: Final = 30.0


class ProviderSession(OAuth2Session):  # type: ignore[misc]
    """An OAuth 2.0 client session for one identity provider client."""

    def __init__(self, settings: LoginSettings, **kwargs: Any) -> None:
        auth_method = "client_secret_post" if settings.client_secret else "none"
        super().__init__(
            client_id=settings.client_id,
            client_secret=settings.client_secret or None,
            token_endpoint_auth_method=auth_method,
            scope=" ".join(settings.scopes),
            code_challenge_method="S256",
            default_timeout=REQUEST_TIMEOUT,
            **kwargs,
        )
        ca_file = settings.issuer_ca_file
        self._verify: str | bool = str(ca_file) if ca_file is not None else True

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["verify"] = self._verify
        return super().request(method, url, *args, **kwargs)

    def get_json(self, url: str) -> dict[str, Any]:
        """GET a JSON object, refusing anything else."""
        with wrapped(f"GET {url}"):
            response = self.get(url, withhold_token=True)
            response.raise_for_status()
            document = response.json()
        if not isinstance(document, dict):
            raise LoginError(f"{url} did not return a JSON object")
        return document


@contextlib.contextmanager
def wrapped(doing: str) -> Iterator[None]:
    """Turn transport and protocol failures while ``doing`` into ``LoginError``."""
    try:
        yield
    except AuthlibBaseError as exc:
        raise LoginError(f"{doing}: {exc.error}: {exc.description or ''}") from exc
    except requests.RequestException as exc:
        raise LoginError(f"{doing}: {_describe(exc)}") from exc
    except ValueError as exc:
        raise LoginError(f"{doing}: the response is not valid JSON") from exc


def _describe(exc: requests.RequestException) -> str:
    response = exc.response
    if response is not None:
        return f"HTTP {response.status_code}"
    return f"{type(exc).__name__}: {exc}"
