"""Which client headers reach the API server, and how kproxy says who is asking.

kproxy speaks to the API server with its own credential and asks it to act as the
verified user through impersonation headers. The API server believes whatever those
headers say, so the only headers of the client that may pass are the ones that cannot
change who the request is made as, or how the connection is framed. Each rule below
removes a header whatever its spelling: header names are compared lower-cased and with
underscores read as hyphens.

``Authorization`` is the client's bearer token for kproxy. It was verified and turned
into a user already; passing it on would hand a token meant for kproxy to the API
server, and the API server might accept it as a credential of its own.

``Impersonate-*`` in any spelling is removed. A client that could send these would
choose its own identity with kproxy's right to impersonate. Names written with
underscores (``Impersonate_User``) are removed too: some servers and intermediaries
turn underscores into hyphens, and a name that one hop ignores must not become a name
the next hop obeys.

``X-Remote-*`` are the request-header authentication names kube-apiserver uses by
default for front proxies. They only count on connections that present the front-proxy
client certificate, but if kproxy's certificate were ever issued by that authority a
client could otherwise name any user. They are removed for the same reason as
impersonation.

Hop-by-hop headers (``Connection``, ``Keep-Alive``, ``Proxy-Authenticate``,
``Proxy-Authorization``, ``Proxy-Connection``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``) describe the client's connection to kproxy, not the
request; kproxy frames its own connection to the API server. An upgrade request gets a
``Connection: Upgrade`` and an ``Upgrade`` header that kproxy writes itself, with a
protocol kproxy accepted.

Every header named in the client's ``Connection`` header is hop-by-hop by declaration
(RFC 9110, section 7.6.1) and is removed. kproxy never forwards the client's
``Connection`` value, so ``Connection: Impersonate-User`` cannot make a later hop drop
the impersonation header kproxy adds, and ``Connection: x, Authorization`` cannot strip
kproxy's own credential: both are added after the client's headers are filtered.

``Host`` names kproxy; the HTTP client writes the API server's. ``Expect`` was already
answered by kproxy's server and would only cost a round trip upstream.

``X-Forwarded-*``, ``Forwarded`` and ``X-Real-Ip`` are client claims about where the
request came from. kube-apiserver reads ``X-Forwarded-For`` and ``X-Real-Ip`` into its
audit log, so kproxy removes the client's and sets ``X-Forwarded-For`` to the address it
actually saw.

Impersonation values must survive the trip byte for byte. Header parsers trim leading
and trailing whitespace, so a group ``" system:masters"`` checked by kproxy would arrive
as ``system:masters``; such values, empty values and control characters are refused
rather than sent. Extra keys are lower-cased and percent-encoded (every byte that is
not an HTTP token character, and ``%`` itself), which is exactly what kube-apiserver
undoes: it lower-cases the name, then percent-decodes it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy, istr

from kproxy.auth.identity import UserInfo
from kproxy.errors import BadRequestError, ForbiddenError

AUTHORIZATION: Final = istr("Authorization")
CONNECTION: Final = istr("Connection")
UPGRADE: Final = istr("Upgrade")
X_FORWARDED_FOR: Final = istr("X-Forwarded-For")
IMPERSONATE_USER: Final = istr("Impersonate-User")
IMPERSONATE_GROUP: Final = istr("Impersonate-Group")
IMPERSONATE_UID: Final = istr("Impersonate-Uid")
IMPERSONATE_EXTRA_PREFIX: Final = "Impersonate-Extra-"

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_STRIPPED_NAMES: Final = HOP_BY_HOP | {
    "authorization",
    "host",
    "expect",
    "forwarded",
    "x-real-ip",
}
_STRIPPED_PREFIXES: Final = ("impersonate-", "x-remote-", "x-forwarded-")

_TOKEN_BYTES: Final = frozenset(
    b"!#$&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE: Final = " \t"

# Header names repeat across requests; remembering the verdict per spelling keeps the
# filter to one dictionary lookup per header. Bounded, because names are client input.
_verdicts: dict[str, bool] = {}
_VERDICT_CACHE_SIZE: Final = 4096


def normalized_name(name: str) -> str:
    """Spell a header name as every rule compares it: lower case, hyphens only."""
    return name.lower().replace("_", "-")


def is_stripped(name: str) -> bool:
    """Say whether a client header of this name never reaches the API server.

    Headers listed in the client's ``Connection`` header are handled separately,
    because that list changes per request.
    """
    verdict = _verdicts.get(name)
    if verdict is None:
        normal = normalized_name(name)
        verdict = normal in _STRIPPED_NAMES or normal.startswith(_STRIPPED_PREFIXES)
        if len(_verdicts) >= _VERDICT_CACHE_SIZE:
            _verdicts.clear()
        _verdicts[name] = verdict
    return verdict


def connection_tokens(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
) -> frozenset[str]:
    """Return the normalized header names a ``Connection`` header declares hop-by-hop."""
    values = headers.getall(CONNECTION, ())
    if not values:
        return frozenset()
    return frozenset(
        normalized_name(token.strip())
        for value in values
        for token in value.split(",")
        if token.strip()
    )


def upstream_headers(
    client_headers: CIMultiDictProxy[str] | CIMultiDict[str],
    user: UserInfo,
    *,
    authorization: str | None,
    peer: str | None,
    upgrade: str | None = None,
) -> CIMultiDict[str]:
    """Build the headers kproxy sends to the API server for one client request.

    ``authorization`` is kproxy's own ``Authorization`` value (``None`` when kproxy
    authenticates with a client certificate); ``peer`` is the client's address as
    kproxy's server saw it; ``upgrade`` is the protocol of an accepted upgrade request.

    Raises ``ForbiddenError`` when the user cannot be expressed faithfully as
    impersonation headers (see the module text), and ``BadRequestError`` when a client
    header value cannot be encoded for the API server.
    """
    headers = sanitized_headers(client_headers)
    if upgrade is not None:
        headers[CONNECTION] = "Upgrade"
        headers[UPGRADE] = upgrade
    if authorization is not None:
        headers[AUTHORIZATION] = authorization
    if peer:
        headers[X_FORWARDED_FOR] = peer
    headers.extend(impersonation_headers(user))
    return headers


def sanitized_headers(
    client_headers: CIMultiDictProxy[str] | CIMultiDict[str],
) -> CIMultiDict[str]:
    """Copy the client headers that may reach the API server, in their order."""
    declared = connection_tokens(client_headers)
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in client_headers.items():
        if is_stripped(name) or (declared and normalized_name(name) in declared):
            continue
        if not value.isascii():
            _check_encodable(name, value)
        kept.add(name, value)
    return kept


def response_headers(
    upstream_headers: CIMultiDictProxy[str] | CIMultiDict[str],
) -> CIMultiDict[str]:
    """Copy the API server's response headers, minus those about its connection."""
    declared = connection_tokens(upstream_headers)
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream_headers.items():
        normal = name.lower()
        if normal in HOP_BY_HOP or (declared and normal in declared):
            continue
        kept.add(name, value)
    return kept


def impersonation_headers(user: UserInfo) -> list[tuple[str, str]]:
    """Return the ``Impersonate-*`` headers that make the API server act as ``user``.

    Raises ``ForbiddenError`` for an empty username (the API server would read it as
    no impersonation at all and act as kproxy itself) and for any value that a header
    cannot carry unchanged.
    """
    if not user.username:
        raise ForbiddenError(
            "refusing to forward a request without a user to impersonate"
        )
    headers: list[tuple[str, str]] = [
        (IMPERSONATE_USER, _impersonation_value("user", user.username))
    ]
    if user.uid:
        headers.append((IMPERSONATE_UID, _impersonation_value("uid", user.uid)))
    for group in user.groups:
        headers.append((IMPERSONATE_GROUP, _impersonation_value("group", group)))
    for key, values in user.extra.items():
        name = IMPERSONATE_EXTRA_PREFIX + extra_key_escape(key)
        headers.extend((name, _impersonation_value("extra", value)) for value in values)
    return headers


# Extra keys come from the configuration and the policies, so they are few and come
# back on every request; the cache is bounded all the same.
@functools.lru_cache(maxsize=1024)
def extra_key_escape(key: str) -> str:
    """Encode an extra key for a header name so that kube-apiserver decodes ``key``.

    The API server lower-cases the name and then percent-decodes it, so the key is
    lower-cased first and every byte that is not a token character, or is ``%``, is
    written as ``%XX``.
    """
    if not key:
        raise ForbiddenError("refusing to impersonate an extra value with an empty key")
    return "".join(
        chr(byte) if byte in _TOKEN_BYTES else f"%{byte:02X}"
        for byte in key.lower().encode("utf-8")
    )


def extra_key_unescape(name_suffix: str) -> str:
    """Decode an extra key the way kube-apiserver does, for tests and stand-ins.

    Lower-case first, then percent-decode; a malformed escape leaves the key as sent,
    which is what Go's ``url.PathUnescape`` error path gives the API server.
    """
    lowered = name_suffix.lower()
    out = bytearray()
    index = 0
    while index < len(lowered):
        char = lowered[index]
        if char != "%":
            out.extend(char.encode("utf-8"))
            index += 1
            continue
        digits = lowered[index + 1 : index + 3]
        if len(digits) != 2 or not all(c in "0123456789abcdef" for c in digits):
            return lowered
        out.append(int(digits, 16))
        index += 3
    return out.decode("utf-8", "surrogateescape")


def _impersonation_value(kind: str, value: str) -> str:
    # A printable value holds no control character; only others need the search.
    if (
        not value
        or value[0] in _WHITESPACE
        or value[-1] in _WHITESPACE
        or (not value.isprintable() and _CONTROL.search(value))
    ):
        raise ForbiddenError(
            f"refusing to impersonate {kind} {value!r}: "
            "it cannot be sent unchanged in an HTTP header"
        )
    return value


def _check_encodable(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(f"header {name!r} is not valid UTF-8") from exc


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """Serialize headers for a raw HTTP/1.1 request, refusing injected line breaks."""
    lines = []
    for name, value in headers:
        if _CONTROL.search(name) or "\r" in value or "\n" in value or "\0" in value:
            raise BadRequestError(f"header {name!r} contains a control character")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("utf-8")
