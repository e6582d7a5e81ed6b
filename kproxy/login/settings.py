"""What ``kproxy login`` needs to know, and the flags that carry it.

The same flags serve two commands: ``kproxy login`` reads them, and ``kproxy
kubeconfig`` writes them into a kubeconfig's ``exec`` entry so that kubectl runs the
login with exactly the settings the kubeconfig was made with. ``login_arguments`` is
the inverse of ``settings_from_arguments``, and a test holds them to that.

The issuer must be an ``https`` URL: the discovery document it serves names the keys
that ID tokens are checked against, so a plain-HTTP issuer would let anyone on the
path choose the keys.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

from kproxy.login.errors import LoginError

Flow = Literal["auth-code", "device"]
Bearer = Literal["id-token", "access-token"]

DEFAULT_SCOPES: Final = ("openid", "email", "offline_access")
DEFAULT_TIMEOUT: Final = 300.0
_DEFAULT_SCOPE: Final = " ".join(DEFAULT_SCOPES)


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """One identity provider client, and how a person logs in with it.

    ``cache_dir`` is ``None`` to mean the default under ``$XDG_CACHE_HOME``, decided
    when the login runs rather than when a kubeconfig is written on another machine.
    """

    issuer: str
    client_id: str
    client_secret: str = ""
    flow: Flow = "auth-code"
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    bearer: Bearer = "id-token"
    resource: str = ""
    issuer_ca_file: Path | None = None
    open_browser: bool = True
    callback_port: int = 0
    auth_params: tuple[tuple[str, str], ...] = ()
    cache_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT


def add_login_arguments(
    parser: argparse.ArgumentParser, *, required: bool = True
) -> None:
    """Add the flags of ``LoginSettings`` to ``parser``.

    ``required=False`` leaves ``--issuer`` and ``--client-id`` optional, for a command
    that may not log in at all; it must then check them itself.
    """
    group = parser.add_argument_group("identity provider")
    group.add_argument(
        "--issuer", required=required, help="the OIDC issuer URL (https)"
    )
    group.add_argument("--client-id", required=required, help="the OAuth client id")
    group.add_argument(
        "--client-secret",
        default="",
        help="only for providers that give installed applications a secret that is "
        "not secret (Google); it is visible in the kubeconfig and process list",
    )
    group.add_argument("--flow", choices=get_args(Flow), default="auth-code")
    group.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        metavar="SCOPE",
        help=f"a scope to request; repeat for several (default: {_DEFAULT_SCOPE})",
    )
    group.add_argument(
        "--token-type",
        choices=get_args(Bearer),
        default="id-token",
        help="the token to give kubectl: the ID token, or the access token",
    )
    group.add_argument(
        "--resource", default="", help="RFC 8707 resource indicator for access tokens"
    )
    group.add_argument(
        "--issuer-certificate-authority",
        type=Path,
        metavar="FILE",
        help="PEM bundle to verify the issuer's TLS certificate with",
    )
    _add_person_arguments(group)


def _add_person_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--no-browser",
        dest="open_browser",
        action="store_false",
        help="print the login URL instead of opening a browser",
    )
    group.add_argument(
        "--callback-port",
        type=int,
        default=0,
        help="loopback port for the redirect (default: any free port)",
    )
    group.add_argument(
        "--auth-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra authorization request parameter; repeat for several",
    )
    group.add_argument(
        "--cache-dir", type=Path, help="token cache (default: $XDG_CACHE_HOME/kproxy)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for the person to finish logging in",
    )


def settings_from_arguments(args: argparse.Namespace) -> LoginSettings:
    """Check the parsed flags and return them as settings.

    Raises ``LoginError`` naming the flag at fault.
    """
    scopes = tuple(args.scopes) if args.scopes else DEFAULT_SCOPES
    settings = LoginSettings(
        issuer=args.issuer or "",
        client_id=args.client_id or "",
        client_secret=args.client_secret,
        flow=args.flow,
        scopes=scopes,
        bearer=args.token_type,
        resource=args.resource,
        issuer_ca_file=args.issuer_certificate_authority,
        open_browser=args.open_browser,
        callback_port=args.callback_port,
        auth_params=tuple(_key_value(item) for item in args.auth_param),
        cache_dir=args.cache_dir,
        timeout=args.timeout,
    )
    _check(settings)
    return settings


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise LoginError(f"--auth-param {item!r} is not KEY=VALUE")
    return key, value


def _check(settings: LoginSettings) -> None:
    issuer = urlsplit(settings.issuer)
    if issuer.scheme != "https" or not issuer.hostname:
        raise LoginError(f"--issuer {settings.issuer!r} is not an https URL")
    if issuer.query or issuer.fragment:
        raise LoginError(f"--issuer {settings.issuer!r} has a query or fragment")
    if not settings.client_id:
        raise LoginError("--client-id is empty")
    if settings.bearer == "id-token" and "openid" not in settings.scopes:
        raise LoginError("--token-type id-token needs the scope 'openid'")
    if not 0 <= settings.callback_port <= 65535:
        raise LoginError(f"--callback-port {settings.callback_port} is not a port")
    if settings.timeout <= 0:
        raise LoginError(f"--timeout {settings.timeout} is not positive")


def login_arguments(settings: LoginSettings) -> list[str]:
    """The ``kproxy login`` flags that reproduce ``settings``, defaults left out."""
    arguments = ["--issuer", settings.issuer, "--client-id", settings.client_id]
    if settings.client_secret:
        arguments += ["--client-secret", settings.client_secret]
    if settings.flow != "auth-code":
        arguments += ["--flow", settings.flow]
    if settings.scopes != DEFAULT_SCOPES:
        for scope in settings.scopes:
            arguments += ["--scope", scope]
    if settings.bearer != "id-token":
        arguments += ["--token-type", settings.bearer]
    if settings.resource:
        arguments += ["--resource", settings.resource]
    if settings.issuer_ca_file is not None:
        arguments += ["--issuer-certificate-authority", str(settings.issuer_ca_file)]
    return arguments + _person_arguments(settings)


def _person_arguments(settings: LoginSettings) -> list[str]:
    arguments = []
    if not settings.open_browser:
        arguments.append("--no-browser")
    if settings.callback_port:
        arguments += ["--callback-port", str(settings.callback_port)]
    for key, value in settings.auth_params:
        arguments += ["--auth-param", f"{key}={value}"]
    if settings.cache_dir is not None:
        arguments += ["--cache-dir", str(settings.cache_dir)]
    if settings.timeout != DEFAULT_TIMEOUT:
        arguments += ["--timeout", str(settings.timeout)]
    return arguments
