"""Running ``kproxy login`` while the test plays the person, and reading its output."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from kproxy.login.credential import Credential
from kproxy.login.plugin import obtain_credential
from kproxy.login.settings import LoginSettings
from tests.oidc.browser import Person
from tests.oidc.harness import PUBLIC_CLIENT_ID, OidcProvider

DEVICE_PROMPT: Final = re.compile(
    r"visit (?P<uri>https://\S+) and enter the code (?P<code>\S+)"
)
LOGIN_URL: Final = re.compile(r"^\s+(?P<url>https://\S+)$", re.MULTILINE)
LINE_WAIT: Final = 30.0


def provider_settings(provider: OidcProvider, **overrides: Any) -> LoginSettings:
    """Login settings for the provider's public client."""
    values: dict[str, Any] = {
        "issuer": provider.issuer,
        "client_id": PUBLIC_CLIENT_ID,
        "scopes": ("openid", "email", "groups", "offline_access"),
        "issuer_ca_file": provider.ca_file,
        "open_browser": False,
        "timeout": 45.0,
    }
    return LoginSettings(**{**values, **overrides})


def provider_flags(provider: OidcProvider, *extra: str) -> list[str]:
    return [
        "--issuer",
        provider.issuer,
        "--client-id",
        PUBLIC_CLIENT_ID,
        "--scope",
        "openid",
        "--scope",
        "email",
        "--scope",
        "groups",
        "--scope",
        "offline_access",
        "--issuer-certificate-authority",
        str(provider.ca_file),
        "--no-browser",
        "--timeout",
        "45",
        *extra,
    ]


@dataclass
class DeviceLoginInThread:
    """``obtain_credential`` with the device flow, in a thread, driven by events.

    The flow's ``sleep`` waits for the person's approval instead of the provider's
    polling interval, so the test takes as long as the approval and no longer.
    """

    settings: LoginSettings
    messages: queue.Queue[str] = field(default_factory=queue.Queue)
    approved: threading.Event = field(default_factory=threading.Event)
    result: list[Credential | BaseException] = field(default_factory=list)

    def run(
        self, person: Person, *, clock: Callable[[], float] | None = None
    ) -> Credential:
        thread = threading.Thread(
            target=self._login, args=(clock,), name="device-login"
        )
        thread.start()
        match = self._prompt()
        person.approve_device(match["uri"], match["code"])
        self.approved.set()
        thread.join(timeout=LINE_WAIT)
        assert not thread.is_alive(), "the login did not finish after approval"
        outcome = self.result[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _prompt(self) -> re.Match[str]:
        while True:
            message = self.messages.get(timeout=LINE_WAIT)
            if match := DEVICE_PROMPT.search(message):
                return match

    def _login(self, clock: Callable[[], float] | None) -> None:
        extra = {} if clock is None else {"clock": clock}
        try:
            credential = obtain_credential(
                self.settings,
                interactive=True,
                notify=self.messages.put,
                sleep=lambda _: self.approved.wait(LINE_WAIT),
                **extra,
            )
            self.result.append(credential)
        except BaseException as exc:
            self.result.append(exc)
            self.messages.put("failed")


class LoginProcess:
    """``kproxy login`` as a child process, its stderr read line by line."""

    def __init__(
        self, command: Sequence[str], *, env: dict[str, str] | None = None
    ) -> None:
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stderr_lines: queue.Queue[str] = queue.Queue()
        self.stderr_seen: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, name="login-stderr")
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.put(line)

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        text = ""
        while True:
            line = self.stderr_lines.get(timeout=LINE_WAIT)
            self.stderr_seen.append(line)
            text += line
            if match := pattern.search(text):
                return match

    def finish(self) -> tuple[int, dict[str, Any] | None, str]:
        assert self.process.stdout is not None
        stdout = self.process.stdout.read()
        self.process.stdout.close()
        code = self.process.wait(timeout=LINE_WAIT)
        self._reader.join(timeout=LINE_WAIT)
        assert self.process.stderr is not None
        self.process.stderr.close()
        rest = list(_drain(self.stderr_lines))
        stderr = "".join(self.stderr_seen + rest)
        return code, (json.loads(stdout) if stdout.strip() else None), stderr


def _drain(lines: queue.Queue[str]) -> Iterator[str]:
    while not lines.empty():
        yield lines.get_nowait()


def run_login(
    command: Path, flags: Sequence[str], *, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``kproxy login`` to the end, with no person."""
    process = LoginProcess([str(command), "login", *flags], env=env)
    return process.finish()
