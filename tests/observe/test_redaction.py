"""What looks like a credential is replaced; ordinary log text is left alone."""

from __future__ import annotations

import pytest

from kproxy.observe.redaction import REDACTED, redact
from tests.observe.records import TOKEN


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"token {TOKEN} rejected", id="jws"),
        pytest.param(f"{TOKEN}.ZXh0cmE.bW9yZQ", id="jwe"),
        pytest.param("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", id="unsigned-jwt"),
        pytest.param("Authorization: Bearer s3cr3t-opaque-token-value", id="bearer"),
        pytest.param(
            "authorization=bearer%20s3cr3t-opaque-token-value", id="bearer-url"
        ),
        pytest.param("Authorization: Basic YWxpY2U6cGFzc3dvcmQxMjM0NQ==", id="basic"),
        pytest.param("joined with abcdef.0123456789abcdef", id="bootstrap-token"),
        pytest.param(f"/api/v1/pods?access_token={TOKEN}", id="in-a-query"),
    ],
)
def test_credentials_are_redacted(text: str) -> None:
    redacted = redact(text)

    assert REDACTED in redacted
    assert "s3cr3t" not in redacted
    assert "eyJzdWIi" not in redacted
    assert "0123456789abcdef" not in redacted
    assert "YWxpY2U6" not in redacted


@pytest.mark.parametrize(
    "text",
    [
        "a single bearer token is required",
        "Basic authentication is not supported",
        "verb=list uri=/api/v1/namespaces/alpha/pods latency=0.012345",
        "decided by policies/alpha.yaml: rules[2] (pods-in-own-namespace)",
        "kubectl/v1.32.4 (linux/amd64) kubernetes/1a2b3c4",
        "https://idp.alpha.edu/.well-known/openid-configuration",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text
