"""The last line of defence against a credential reaching a log line.

No code in kproxy means to log a token: records carry no header but ``User-Agent``, and
errors name reasons, not values. But a client can put anything in a URI or a
User-Agent, an upstream error can quote a request, and a library can log more than it
should. So every line written to the process log or the audit trail passes through
``redact`` first, which replaces whatever looks like a credential with ``[REDACTED]``.

What looks like a credential:

- a JWT or JWE in compact form: base64url segments separated by dots whose first
  segment starts with ``eyJ`` (the encoding of ``{"``), as every JOSE header does;
- a credential of 16 characters or more after ``Bearer`` or ``Basic`` (shorter words
  are prose: "a bearer token is required" stays readable);
- a Kubernetes bootstrap token (``[a-z0-9]{6}.[a-z0-9]{16}``).

It is a pattern match, so it cannot promise to find an opaque token of unknown shape;
it only makes the likely mistakes harmless.
"""

from __future__ import annotations

import re
from typing import Final

REDACTED: Final = "[REDACTED]"

_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){1,4}")
_AUTHORIZATION: Final = re.compile(
    r"(?<![A-Za-z0-9])(?i:bearer|basic)(?:\s|%20|\+)+[A-Za-z0-9._~+/=-]{16,}"
)
_BOOTSTRAP_SECRET: Final = re.compile(r"\.[a-z0-9]{16}(?![A-Za-z0-9])")
_BOOTSTRAP_TOKEN: Final = re.compile(
    r"(?<![A-Za-z0-9])[a-z0-9]{6}\.[a-z0-9]{16}(?![A-Za-z0-9])"
)


def redact(text: str) -> str:
    """Return ``text`` with everything that looks like a credential replaced.

    Each pattern runs only after a cheap test for what it cannot match without
    (a literal, or the secret half of a bootstrap token), since this runs on every
    log line and nearly none holds a credential.
    """
    lowered = text.lower()
    if "bearer" in lowered or "basic" in lowered:
        text = _AUTHORIZATION.sub(REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if _BOOTSTRAP_SECRET.search(text):
        text = _BOOTSTRAP_TOKEN.sub(REDACTED, text)
    return text
