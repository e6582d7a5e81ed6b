"""The two ways a person logs in: in a browser, or on another device.

**Authorization code with PKCE** (RFC 6749 section 4.1, RFC 7636 with ``S256``): the
browser is sent to the provider and comes back to the loopback receiver. ``state``
binds the redirect to this process, ``nonce`` binds the ID token to this request, and
the PKCE verifier binds the code to this process, so a code read from the browser's
history is useless to anyone else.

**Device authorization grant** (RFC 8628): for shells without a browser. The user code
and the verification URI go to stderr, never stdout, which kubectl parses as the
credential; the process then polls the token endpoint at the provider's interval,
slowing down when told to. There is no redirect, so there is no ``state``, and OpenID
Connect defines no ``nonce`` for this grant.

Both return the provider's token response untouched; verification is the caller's.
"""

from __future__ import annotations

import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError

from kproxy.login.discovery import ProviderMetadata
from kproxy.login.errors import LoginError
from kproxy.login.loopback import LoopbackReceiver
from kproxy.login.settings import LoginSettings
from kproxy.login.transport import ProviderSession, wrapped

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_POLL_INTERVAL: Final = 5.0
SLOW_DOWN_STEP: Final = 5.0
SLOW_DOWN: Final = "slow_down"
KEEP_POLLING: Final = frozenset({"authorization_pending", SLOW_DOWN})

Notify = Callable[[str], None]
Sleep = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class FlowResult:
    """The provider's token response and the nonce the request carried, if any."""

    token_response: Mapping[str, Any]
    nonce: str | None


def request_parameters(settings: LoginSettings) -> dict[str, str]:
    """Parameters every authorization request of these settings carries."""
    parameters: dict[str, str] = {}
    if settings.resource:
        parameters["resource"] = settings.resource
    # OpenID Connect Core 11: offline_access is honoured only with prompt=consent.
    if "offline_access" in settings.scopes:
        parameters["prompt"] = "consent"
    parameters.update(settings.auth_params)
    return parameters


def authorization_code_flow(
    session: ProviderSession,
    metadata: ProviderMetadata,
    settings: LoginSettings,
    *,
    notify: Notify,
) -> FlowResult:
    """Log in through the browser and redeem the code; raises ``LoginError``."""
    nonce = generate_token(32)
    code_verifier = generate_token(64)
    with LoopbackReceiver(port=settings.callback_port) as receiver:
        url, state = session.create_authorization_url(
            metadata.authorization_endpoint,
            redirect_uri=receiver.redirect_uri,
            code_verifier=code_verifier,
            nonce=nonce,
            **request_parameters(settings),
        )
        receiver.expect(state)
        _show_login_url(url, open_browser=settings.open_browser, notify=notify)
        response = receiver.wait(timeout=settings.timeout)

    extra = {"resource": settings.resource} if settings.resource else {}
    with wrapped(f"redeeming the code at {metadata.token_endpoint}"):
        token_response = session.fetch_token(
            metadata.token_endpoint,
            grant_type="authorization_code",
            code=response["code"],
            redirect_uri=receiver.redirect_uri,
            code_verifier=code_verifier,
            **extra,
        )
    return FlowResult(token_response=token_response, nonce=nonce)


def _show_login_url(url: str, *, open_browser: bool, notify: Notify) -> None:
    if open_browser and webbrowser.open(url):
        notify(f"kproxy: a browser was opened to log in; if not, open:\n  {url}")
        return
    notify(f"kproxy: open this URL in a browser to log in:\n  {url}")


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """The device authorization response (RFC 8628 section 3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: float
    interval: float


def device_flow(
    session: ProviderSession,
    metadata: ProviderMetadata,
    settings: LoginSettings,
    *,
    notify: Notify,
    sleep: Sleep = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FlowResult:
    """Show the user code, then poll until the person approves; raises ``LoginError``."""
    authorization = _authorize_device(session, metadata, settings)
    notify(
        f"kproxy: to log in, visit {authorization.verification_uri} "
        f"and enter the code {authorization.user_code}"
    )
    if authorization.verification_uri_complete:
        notify(f"kproxy: or open {authorization.verification_uri_complete}")

    deadline = clock() + min(authorization.expires_in, settings.timeout)
    interval = authorization.interval
    while clock() + interval < deadline:
        sleep(interval)
        outcome = _poll(session, metadata, authorization)
        if isinstance(outcome, Mapping):
            return FlowResult(token_response=outcome, nonce=None)
        if outcome == SLOW_DOWN:
            interval += SLOW_DOWN_STEP
    raise LoginError("the device login was not approved in time")


def _authorize_device(
    session: ProviderSession, metadata: ProviderMetadata, settings: LoginSettings
) -> DeviceAuthorization:
    if not metadata.device_authorization_endpoint:
        raise LoginError(
            f"{metadata.issuer!r} offers no device authorization endpoint; "
            "use --flow auth-code"
        )
    data = {"client_id": settings.client_id, "scope": " ".join(settings.scopes)}
    if settings.client_secret:
        data["client_secret"] = settings.client_secret
    if settings.resource:
        data["resource"] = settings.resource
    endpoint = metadata.device_authorization_endpoint
    with wrapped(f"POST {endpoint}"):
        response = session.post(endpoint, data=data, withhold_token=True)
        document = response.json()
    if not response.ok:
        raise LoginError(
            f"{endpoint} refused the device login: {document.get('error')}"
        )
    return _device_authorization(document, endpoint)


def _device_authorization(document: Any, endpoint: str) -> DeviceAuthorization:
    try:
        return DeviceAuthorization(
            device_code=str(document["device_code"]),
            user_code=str(document["user_code"]),
            verification_uri=str(document["verification_uri"]),
            verification_uri_complete=str(
                document.get("verification_uri_complete", "")
            ),
            expires_in=float(document["expires_in"]),
            interval=float(document.get("interval", DEFAULT_POLL_INTERVAL)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LoginError(f"{endpoint} answered without {exc}") from exc


def _poll(
    session: ProviderSession,
    metadata: ProviderMetadata,
    authorization: DeviceAuthorization,
) -> Mapping[str, Any] | str:
    """The token response, or the name of the reason to keep polling."""
    with wrapped(f"the device login at {metadata.token_endpoint}"):
        try:
            token_response: Mapping[str, Any] = session.fetch_token(
                metadata.token_endpoint,
                grant_type=DEVICE_CODE_GRANT,
                device_code=authorization.device_code,
            )
        except OAuthError as exc:
            if exc.error in KEEP_POLLING:
                return str(exc.error)
            raise
    return token_response
