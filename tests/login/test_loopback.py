"""The loopback receiver accepts only the redirect that carries this login's state."""

from __future__ import annotations

import pytest
import requests

from kproxy.login.errors import LoginError
from kproxy.login.loopback import LoopbackReceiver


def _get(url: str) -> requests.Response:
    return requests.get(url, timeout=10)


def test_a_callback_with_another_state_is_refused_and_waiting_goes_on() -> None:
    with LoopbackReceiver() as receiver:
        receiver.expect("the-state")
        forged = _get(f"{receiver.redirect_uri}?code=attacker&state=guess")
        genuine = _get(f"{receiver.redirect_uri}?code=mine&state=the-state")
        response = receiver.wait(timeout=10)

    assert forged.status_code == 400
    assert genuine.status_code == 200
    assert response["code"] == "mine"


def test_only_the_first_matching_callback_counts() -> None:
    with LoopbackReceiver() as receiver:
        receiver.expect("s")
        _get(f"{receiver.redirect_uri}?code=first&state=s")
        replay = _get(f"{receiver.redirect_uri}?code=second&state=s")
        response = receiver.wait(timeout=10)

    assert replay.status_code == 400
    assert response["code"] == "first"


def test_an_error_from_the_provider_ends_the_login_with_its_reason() -> None:
    with LoopbackReceiver() as receiver:
        receiver.expect("s")
        page = _get(f"{receiver.redirect_uri}?error=access_denied&state=s")

        with pytest.raises(LoginError, match="access_denied"):
            receiver.wait(timeout=10)

    assert page.status_code == 400


def test_it_listens_on_loopback_only() -> None:
    with LoopbackReceiver() as receiver:
        assert receiver.redirect_uri.startswith("http://127.0.0.1:")
        assert receiver._server.server_address[0] == "127.0.0.1"
