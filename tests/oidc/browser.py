"""The person at the browser, played by the test.

``Person`` does what a user does with a real browser against ``oidc-provider``'s
pages: it follows redirects, fills in the first form of each page (the user code, a
login name and password, consent, confirmation) and submits it, until a page with no
form is reached. It knows nothing of kproxy, so the flows under test meet the provider
exactly as a person's browser would present them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Final
from urllib.parse import urljoin

import requests

_MAX_STEPS: Final = 20


@dataclass(slots=True)
class _Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _FirstFormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.form: _Form | None = None
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.form is None:
            method = attributes.get("method", "get").upper()
            self.form = _Form(action=attributes.get("action", ""), method=method)
            self._inside = True
        elif tag == "input" and self._inside and self.form is not None:
            name = attributes.get("name")
            if name:
                self.form.fields[name] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def first_form(html: str) -> _Form | None:
    parser = _FirstFormParser()
    parser.feed(html)
    return parser.form


class Person:
    """A user with a browser session who trusts the provider's CA."""

    def __init__(self, *, ca_file: Path, login: str = "alice") -> None:
        self.login = login
        self.session = requests.Session()
        # Environment CA bundles (REQUESTS_CA_BUNDLE) would otherwise replace ours.
        self.session.trust_env = False
        self.session.verify = str(ca_file)
        self.user_code = ""
        self.visited: list[str] = []

    def __enter__(self) -> Person:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def approve_device(
        self, verification_uri: str, user_code: str
    ) -> requests.Response:
        """Enter ``user_code`` at ``verification_uri``, log in and consent."""
        self.user_code = user_code
        return self.browse(verification_uri)

    def browse(self, url: str) -> requests.Response:
        """Open ``url`` and keep submitting forms until a page has none."""
        response = self._get(url)
        for _ in range(_MAX_STEPS):
            if response.is_redirect:
                response = self._get(
                    urljoin(response.url, response.headers["location"])
                )
                continue
            form = first_form(response.text) if _is_html(response) else None
            if form is None:
                return response
            response = self._submit(response.url, form)
        raise AssertionError(f"no end to the pages after {_MAX_STEPS} steps")

    def _get(self, url: str) -> requests.Response:
        self.visited.append(url)
        return self.session.get(url, allow_redirects=False, timeout=30)

    def _submit(self, page_url: str, form: _Form) -> requests.Response:
        data = dict(form.fields)
        if "user_code" in data and not data["user_code"]:
            data["user_code"] = self.user_code
        if "login" in data:
            data["login"] = self.login
        if "password" in data:
            data["password"] = "any password: the provider's dev login accepts it"
        url = urljoin(page_url, form.action)
        self.visited.append(url)
        return self.session.request(
            form.method, url, data=data, allow_redirects=False, timeout=30
        )


def _is_html(response: requests.Response) -> bool:
    return "html" in response.headers.get("content-type", "")
