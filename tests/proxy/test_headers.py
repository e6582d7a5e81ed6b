"""Header hygiene and impersonation: what reaches the API server and how."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from multidict import CIMultiDict

from kproxy.auth.identity import UserInfo
from kproxy.errors import BadRequestError, ForbiddenError
from kproxy.proxy.headers import (
    IMPERSONATE_GROUP,
    IMPERSONATE_USER,
    extra_key_escape,
    extra_key_unescape,
    header_lines,
    impersonation_headers,
    response_headers,
    upstream_headers,
)

ALICE = UserInfo(username="alice@uni.example", groups=("uni:staff",))
KPROXY_TOKEN = "Bearer kproxy-own-token"


def forwarded(
    pairs: list[tuple[str, str]],
    user: UserInfo = ALICE,
    *,
    upgrade: str | None = None,
) -> CIMultiDict[str]:
    return upstream_headers(
        CIMultiDict(pairs),
        user,
        authorization=KPROXY_TOKEN,
        peer="203.0.113.7",
        upgrade=upgrade,
    )


STRIPPED = [
    ("Authorization", "Bearer client-token"),
    ("authorization", "Bearer client-token"),
    ("AUTHORIZATION", "Bearer client-token"),
    ("AuThOrIzAtIoN", "Bearer client-token"),
    ("Proxy_Authorization", "Basic eA=="),
    ("Impersonate-User", "system:admin"),
    ("impersonate-user", "system:admin"),
    ("IMPERSONATE-GROUP", "system:masters"),
    ("Impersonate_User", "system:admin"),
    ("impersonate_group", "system:masters"),
    ("Impersonate-Uid", "0"),
    ("Impersonate-Extra-Scopes", "all"),
    ("impersonate_extra_scopes", "all"),
    ("Impersonate-Anything-New", "x"),
    ("X-Remote-User", "system:admin"),
    ("x_remote_group", "system:masters"),
    ("X-Remote-Extra-Scopes", "all"),
    ("Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Authenticate", "Basic"),
    ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Trailer", "Expires"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"),
    ("Host", "kproxy.example"),
    ("Expect", "100-continue"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("x-forwarded-host", "evil.example"),
    ("X_Forwarded_Proto", "http"),
    ("Forwarded", "for=10.0.0.1"),
    ("X-Real-Ip", "10.0.0.1"),
]


@pytest.mark.parametrize(
    ("name", "value"), STRIPPED, ids=[name for name, _ in STRIPPED]
)
def test_client_header_is_stripped(name: str, value: str) -> None:
    headers = forwarded([(name, value), ("Accept", "application/json")])

    assert value not in headers.values()
    assert headers["Accept"] == "application/json"


KEPT = [
    ("Accept", "application/json;as=Table;g=meta.k8s.io;v=v1"),
    ("Content-Type", "application/merge-patch+json"),
    ("Content-Length", "42"),
    ("User-Agent", "kubectl/v1.32.0 (linux/amd64)"),
    ("Accept-Encoding", "gzip"),
    ("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ("Kubectl-Command", "kubectl get"),
]


@pytest.mark.parametrize(("name", "value"), KEPT, ids=[name for name, _ in KEPT])
def test_ordinary_client_header_is_kept(name: str, value: str) -> None:
    assert forwarded([(name, value)]).getall(name) == [value]


def test_repeated_client_headers_keep_their_order() -> None:
    headers = forwarded([("Accept", "a"), ("X-Other", "x"), ("Accept", "b")])

    assert headers.getall("Accept") == ["a", "b"]


def test_headers_named_in_connection_are_stripped() -> None:
    headers = forwarded(
        [
            ("Connection", "X-Secret, x_other"),
            ("X-Secret", "1"),
            ("X-Other", "2"),
            ("X-Kept", "3"),
        ]
    )

    assert "X-Secret" not in headers
    assert "X-Other" not in headers
    assert headers["X-Kept"] == "3"
    assert "Connection" not in headers


def test_connection_naming_impersonate_user_cannot_drop_kproxys_header() -> None:
    headers = forwarded([("Connection", "Impersonate-User, Impersonate-Group")])

    assert headers["Impersonate-User"] == "alice@uni.example"
    assert headers.getall("Impersonate-Group") == ["uni:staff"]
    assert "Connection" not in headers


def test_connection_naming_authorization_cannot_drop_kproxys_credential() -> None:
    headers = forwarded(
        [("Connection", "x, Authorization"), ("Authorization", "Bearer client")]
    )

    assert headers.getall("Authorization") == [KPROXY_TOKEN]


def test_client_x_forwarded_for_is_replaced_by_the_real_peer() -> None:
    headers = forwarded([("X-Forwarded-For", "10.9.9.9, 10.8.8.8")])

    assert headers.getall("X-Forwarded-For") == ["203.0.113.7"]


def test_certificate_credential_sends_no_authorization() -> None:
    headers = upstream_headers(
        CIMultiDict([("Authorization", "Bearer client")]),
        ALICE,
        authorization=None,
        peer=None,
    )

    assert "Authorization" not in headers
    assert "X-Forwarded-For" not in headers


def test_upgrade_request_gets_connection_and_upgrade_rebuilt() -> None:
    headers = forwarded(
        [
            ("Connection", "Upgrade, X-Junk"),
            ("Upgrade", "h2c, websocket"),
            ("X-Junk", "1"),
        ],
        upgrade="websocket",
    )

    assert headers.getall("Connection") == ["Upgrade"]
    assert headers.getall("Upgrade") == ["websocket"]
    assert "X-Junk" not in headers


def test_impersonation_names_user_groups_uid_and_extras() -> None:
    user = UserInfo(
        username="system:serviceaccount:admiralty:agent",
        uid="c0ffee",
        groups=("uni-a:admiralty", "system:authenticated"),
        extra=MappingProxyType(
            {"kproxy.io/university": ("uni-a",), "scopes": ("a", "b")}
        ),
    )

    headers = forwarded([], user)

    assert headers.getall("Impersonate-User") == [
        "system:serviceaccount:admiralty:agent"
    ]
    assert headers.getall("Impersonate-Uid") == ["c0ffee"]
    assert headers.getall("Impersonate-Group") == [
        "uni-a:admiralty",
        "system:authenticated",
    ]
    assert headers.getall("Impersonate-Extra-kproxy.io%2Funiversity") == ["uni-a"]
    assert headers.getall("Impersonate-Extra-scopes") == ["a", "b"]


def test_user_without_uid_sends_no_uid_header() -> None:
    assert "Impersonate-Uid" not in forwarded([])


def test_empty_username_is_refused_rather_than_sent() -> None:
    with pytest.raises(ForbiddenError, match="without a user to impersonate"):
        forwarded([], UserInfo(username=""))


@pytest.mark.parametrize(
    "user",
    [
        UserInfo(username=" alice"),
        UserInfo(username="alice\t"),
        UserInfo(username="alice\r\nImpersonate-Group: system:masters"),
        UserInfo(username="alice", groups=(" system:masters",)),
        UserInfo(username="alice", groups=("",)),
        UserInfo(username="alice", uid="1\n"),
        UserInfo(username="alice", extra=MappingProxyType({"k": ("v\x00",)})),
        UserInfo(username="alice", extra=MappingProxyType({"": ("v",)})),
        UserInfo(username="alice", groups=("ops\x7f",)),
        UserInfo(username="alice\u00a0\x1bx"),
    ],
    ids=[
        "leading-space-user",
        "trailing-tab-user",
        "header-injection-user",
        "leading-space-group",
        "empty-group",
        "newline-uid",
        "nul-extra-value",
        "empty-extra-key",
        "delete-in-group",
        "escape-beside-a-non-printable-user",
    ],
)
def test_values_a_header_would_alter_are_refused(user: UserInfo) -> None:
    with pytest.raises(ForbiddenError):
        forwarded([], user)


def test_values_python_calls_unprintable_but_headers_carry_are_sent() -> None:
    # A no-break space is not printable to Python, yet no control character: a
    # header carries it unchanged, so it must not be refused with the ones above.
    user = UserInfo(username="alice\u00a0b", groups=("g\u00a0h",))
    assert impersonation_headers(user) == [
        (IMPERSONATE_USER, "alice\u00a0b"),
        (IMPERSONATE_GROUP, "g\u00a0h"),
    ]


def test_non_utf8_client_header_value_is_a_bad_request() -> None:
    undecodable = b"caf\xe9".decode("utf-8", "surrogateescape")

    with pytest.raises(BadRequestError, match="X-Name"):
        forwarded([("X-Name", undecodable)])


def test_unicode_client_header_value_is_kept() -> None:
    assert forwarded([("X-Name", "café")])["X-Name"] == "café"


EXTRA_KEYS = [
    "scopes",
    "kproxy.io/university",
    "authentication.kubernetes.io/credential-id",
    "with space",
    "percent%sign",
    "%2F-looks-encoded",
    "colon:and;semicolon",
    "unicode-é-ключ",
    'quote"and,comma',
    "tilde~pipe|caret^",
]


@pytest.mark.parametrize("key", EXTRA_KEYS)
def test_extra_key_round_trips_through_the_api_servers_decoding(key: str) -> None:
    escaped = extra_key_escape(key)

    assert all(char.isascii() and not char.isspace() for char in escaped)
    # Go canonicalises header names; the API server lower-cases before decoding.
    assert extra_key_unescape(escaped.upper()) == key.lower()
    assert extra_key_unescape(escaped) == key.lower()


def test_extra_key_escape_matches_client_go_spelling() -> None:
    assert extra_key_escape("example.com/Key%") == "example.com%2Fkey%25"


def test_extra_key_unescape_keeps_malformed_escapes_as_sent() -> None:
    assert extra_key_unescape("Bad%zzKey") == "bad%zzkey"


def test_response_hop_by_hop_headers_are_dropped() -> None:
    headers = response_headers(
        CIMultiDict(
            [
                ("Content-Type", "application/json"),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Audit-Id", "abc"),
                ("Content-Encoding", "gzip"),
            ]
        )
    )

    assert list(headers.items()) == [
        ("Content-Type", "application/json"),
        ("Audit-Id", "abc"),
        ("Content-Encoding", "gzip"),
    ]


def test_header_lines_refuse_injected_line_breaks() -> None:
    assert header_lines([("A", "b"), ("C", "d")]) == b"A: b\r\nC: d\r\n"
    with pytest.raises(BadRequestError):
        header_lines([("A", "b\r\nInjected: yes")])
