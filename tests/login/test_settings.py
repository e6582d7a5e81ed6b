"""The login flags, and the kubeconfig's copy of them, say the same thing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kproxy.login.errors import LoginError
from kproxy.login.settings import (
    LoginSettings,
    add_login_arguments,
    login_arguments,
    settings_from_arguments,
)


def _parse(arguments: list[str]) -> LoginSettings:
    parser = argparse.ArgumentParser()
    add_login_arguments(parser)
    return settings_from_arguments(parser.parse_args(arguments))


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(LoginSettings(issuer="https://idp", client_id="c"), id="defaults"),
        pytest.param(
            LoginSettings(
                issuer="https://keycloak.example/realms/uni",
                client_id="kubectl",
                client_secret="installed-app",
                flow="device",
                scopes=("openid", "groups"),
                bearer="access-token",
                resource="https://kproxy.uni-a.example",
                issuer_ca_file=Path("/etc/ca.pem"),
                open_browser=False,
                callback_port=8000,
                auth_params=(("kc_idp_hint", "cilogon"), ("prompt", "login")),
                cache_dir=Path("/tmp/cache"),
                timeout=30.0,
            ),
            id="everything",
        ),
    ],
)
def test_login_arguments_parse_back_to_the_same_settings(
    settings: LoginSettings,
) -> None:
    assert _parse(login_arguments(settings)) == settings


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["--issuer", "http://idp"], "not an https URL", id="http"),
        pytest.param(["--issuer", "https://idp?x=1"], "query or fragment", id="query"),
        pytest.param(
            ["--issuer", "https://idp", "--scope", "email"],
            "needs the scope 'openid'",
            id="no-openid",
        ),
        pytest.param(
            ["--issuer", "https://idp", "--auth-param", "novalue"],
            "is not KEY=VALUE",
            id="auth-param",
        ),
        pytest.param(
            ["--issuer", "https://idp", "--callback-port", "70000"],
            "is not a port",
            id="port",
        ),
    ],
)
def test_bad_flags_are_refused_with_the_flag_named(
    arguments: list[str], message: str
) -> None:
    with pytest.raises(LoginError, match=message):
        _parse([*arguments, "--client-id", "c"])


def test_an_access_token_needs_no_openid_scope() -> None:
    flags = ["--issuer", "https://idp", "--client-id", "c", "--scope", "cluster"]
    settings = _parse([*flags, "--token-type", "access-token"])

    assert settings.scopes == ("cluster",)
