"""Properties of the parsers an attacker feeds first: headers and tokens.

The same checks run under atheris (``make fuzz``); here hypothesis drives them on every
test run. An input either fuzzer finds becomes a named case in the attack tests (the
``exp`` beyond any float in ``test_tokens.py`` is one). Path parsing has its own
properties in ``tests/policy/test_properties.py``.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import (
    AUDIENCE,
    ISSUER,
    check_header_sanitizer,
    check_token,
    token_from_parts,
)

SPELLINGS = [
    "Impersonate-User",
    "Impersonate-Group",
    "Impersonate-Uid",
    "Impersonate-Extra-Scopes",
    "Authorization",
    "Connection",
    "X-Remote-User",
    "X-Forwarded-For",
    "Forwarded",
    "X-Real-Ip",
    "Content-Type",
    "Accept",
]


@st.composite
def header_names(draw: st.DrawFn) -> str:
    """Names as attackers spell them: any case, underscores, or invented."""
    base = draw(
        st.sampled_from(SPELLINGS)
        | st.text(string.ascii_letters + "-_", min_size=1, max_size=20)
    )
    cased = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in base)
    return cased.replace("-", "_") if draw(st.booleans()) else cased


header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=40,
) | st.lists(st.sampled_from(SPELLINGS), min_size=1, max_size=4).map(", ".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(header_names(), header_values), max_size=12))
def test_no_client_header_changes_who_the_api_server_acts_as(
    pairs: list[tuple[str, str]],
) -> None:
    check_header_sanitizer(pairs)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["ES256", "RS256", "HS256", "none", "PS256"])
        | json_values,
        "kid": json_values,
        "crit": json_values,
        "jku": json_values,
        "typ": json_values,
    },
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from([ISSUER, ISSUER + "/"]) | json_values,
        "aud": st.sampled_from([AUDIENCE, [AUDIENCE]]) | json_values,
        "exp": st.integers(0, 2**70) | json_values,
        "nbf": json_values,
        "sub": json_values,
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers | json_values,
    claims | json_values,
    st.text(string.ascii_letters + "-_", max_size=90),
)
def test_no_unsigned_token_is_accepted_and_refusals_are_clean(
    header: object, payload: object, signature: str
) -> None:
    check_token(token_from_parts(header, payload, signature))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_bearer_text_is_refused_cleanly(token: str) -> None:
    check_token(token)
