"""Kubernetes request attributes, parsed from a request as kube-apiserver parses them.

kproxy decides on a request before the API server sees it, so both must read the same
request the same way. This module follows ``RequestInfoFactory.NewRequestInfo`` in
``k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`` step by step:

- the decoded path is split on ``/`` after trimming slashes at both ends; the API
  prefixes are ``api`` (no group) and ``apis`` (a group follows);
- ``watch`` and ``proxy`` right after the version set the verb from the path (the
  legacy ``/api/v1/watch/...`` and ``/api/v1/proxy/...`` forms); otherwise the HTTP
  method does: POST create, GET and HEAD get, PUT update, PATCH patch, DELETE delete;
- after ``namespaces/{ns}`` only ``status`` and ``finalize`` belong to the namespace
  itself; any other segment starts a namespaced resource;
- the parts left are ``resource/name/subresource``; ``proxy`` takes no subresource;
- a GET without a name is ``list``, or ``watch`` when the first ``watch`` query value is
  anything but ``0`` or ``false`` (any case; an empty value means watch), and a field
  selector ``metadata.name=X`` (or ``==``) makes it name-scoped; a DELETE without a name
  is ``deletecollection``.

What the API server tolerates but kproxy refuses: its path decoding turns ``%2F`` into a
separator and ``%2e%2e`` into ``..``, keeps empty segments and never resolves dot
segments, while every proxy, load balancer and HTTP library on the way may normalize
them differently. A path whose meaning could change on the way is therefore refused with
``BadRequestError`` before any decision: dot segments, empty segments (``//`` or a
trailing slash), percent-encoded ``/``, ``.`` or ``%``, ``;``, a backslash, control
characters, anything not ASCII, invalid escapes and paths over ``MAX_PATH_LENGTH``. The
query gets the same treatment for ``;`` (older Go versions split on it, newer ones drop
the pair), control characters, non-ASCII bytes and invalid escapes.

Where kproxy cannot be sure how the API server reads a field selector (parentheses, or
a name the API server would not accept), it leaves the request unscoped: an unscoped
list needs a broader permission than a name-scoped one, so doubt only ever narrows
what is allowed. A query the API server fails to decode makes the request fail there
as well, so no difference in that direction can reach an object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args
from urllib.parse import unquote, unquote_to_bytes

from kproxy.errors import BadRequestError

Verb = Literal[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
]

# The verbs a resource request can carry, and those of a non-resource request: the
# API server's lower-cased HTTP methods.
RESOURCE_VERBS: Final[tuple[str, ...]] = get_args(Verb)
NON_RESOURCE_VERBS: Final = ("get", "head", "post", "put", "patch", "delete", "options")

MAX_PATH_LENGTH: Final = 4096
MAX_QUERY_LENGTH: Final = 16384

API_PREFIXES: Final = frozenset({"api", "apis"})
GROUPLESS_API_PREFIXES: Final = frozenset({"api"})
SPECIAL_VERBS: Final = frozenset({"proxy", "watch"})
SPECIAL_VERBS_WITHOUT_SUBRESOURCES: Final = frozenset({"proxy"})
NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})

_VERB_OF_METHOD: Final = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

# Unreserved and sub-delimiter characters of RFC 3986 without ";", plus ":", "@" and
# "%" for escapes. Everything else (space, "\", controls, non-ASCII) is refused.
_SAFE_PATH: Final = re.compile(r"/|(?:/[A-Za-z0-9\-._~!$&'()*+,=:@%]+)+")
_SAFE_QUERY: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@%/?\[\]]*")
_ESCAPE: Final = re.compile(r"%(?:[0-9A-Fa-f]{2})?")
# Decoded bytes that would change how the path splits or resolves.
_UNSAFE_DECODED: Final = (
    frozenset(b"/.%\\;") | frozenset(range(0x20)) | frozenset(range(0x7F, 0x100))
)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a request asks for, in the terms RBAC rules are written in.

    For a non-resource request (``/version``, ``/openapi/v3``) ``is_resource_request``
    is false, ``path`` is set and the resource fields are empty; ``verb`` is then the
    lower-cased HTTP method, as the API server sets it. ``path`` is the decoded path.
    """

    verb: str
    path: str
    is_resource_request: bool
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def parse_request(method: str, raw_path: str, raw_query: str) -> RequestInfo:
    """Return the request attributes the API server would derive from this request.

    ``raw_path`` is the path exactly as received (percent-encoded, without the query)
    and ``raw_query`` the query string without ``?``. Raises ``BadRequestError`` when
    the path or query could be read differently by kproxy and the API server, or when
    the API server itself could not derive attributes (``/api/v1/watch``).
    """
    path = decode_path(raw_path)
    check_query(raw_query)
    parts = path.strip("/").split("/") if path != "/" else []
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return RequestInfo(verb=method.lower(), path=path, is_resource_request=False)
    return _resource_request(method, path, parts, raw_query)


def decode_path(raw_path: str) -> str:
    """Decode a wire path, refusing anything whose meaning is not unambiguous.

    Raises ``BadRequestError`` naming the problem.
    """
    if len(raw_path) > MAX_PATH_LENGTH:
        raise BadRequestError(f"request path is longer than {MAX_PATH_LENGTH} bytes")
    if not _SAFE_PATH.fullmatch(raw_path):
        raise BadRequestError(_path_problem(raw_path))
    if "/./" in raw_path + "/" or "/../" in raw_path + "/":
        raise BadRequestError("request path contains a dot segment")
    if "%" not in raw_path:
        return raw_path
    for escape in _ESCAPE.findall(raw_path):
        if len(escape) != 3:
            raise BadRequestError("request path contains an invalid percent-escape")
        if int(escape[1:], 16) in _UNSAFE_DECODED:
            raise BadRequestError(
                f"request path contains the escape {escape!r}, which proxies and the "
                "API server may decode differently"
            )
    return unquote(raw_path)


def _path_problem(raw_path: str) -> str:
    if not raw_path.startswith("/"):
        return "request path must start with '/'"
    if "//" in raw_path or raw_path.endswith("/"):
        return "request path contains an empty segment"
    if ";" in raw_path:
        return "request path contains ';'"
    return "request path contains a character that must be percent-encoded"


def check_query(raw_query: str) -> None:
    """Refuse a query that Go's parser and others could split differently."""
    if not raw_query:
        return
    if len(raw_query) > MAX_QUERY_LENGTH:
        raise BadRequestError(f"request query is longer than {MAX_QUERY_LENGTH} bytes")
    if not _SAFE_QUERY.fullmatch(raw_query):
        if ";" in raw_query:
            raise BadRequestError("request query contains ';'")
        raise BadRequestError("request query contains a character that must be encoded")
    if "%" in raw_query and any(len(e) != 3 for e in _ESCAPE.findall(raw_query)):
        raise BadRequestError("request query contains an invalid percent-escape")


def _resource_request(
    method: str, path: str, parts: list[str], raw_query: str
) -> RequestInfo:
    api_prefix, parts = parts[0], parts[1:]
    api_group = ""
    if api_prefix not in GROUPLESS_API_PREFIXES:
        if len(parts) < 3:
            return RequestInfo(
                verb=method.lower(), path=path, is_resource_request=False
            )
        api_group, parts = parts[0], parts[1:]
    api_version, parts = parts[0], parts[1:]

    if parts[0] in SPECIAL_VERBS:
        if len(parts) < 2:
            raise BadRequestError(
                f"unable to determine kind and namespace from path {path!r}"
            )
        verb, parts = parts[0], parts[1:]
    else:
        verb = _VERB_OF_METHOD.get(method, "")

    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]

    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = ""
    if len(parts) >= 3 and verb not in SPECIAL_VERBS_WITHOUT_SUBRESOURCES:
        subresource = parts[2]

    if not name and verb == "get":
        query = parse_query(raw_query) if raw_query else {}
        verb = "watch" if _wants_watch(query) else "list"
        name = _name_from_field_selector(query)
    if not name and verb == "delete":
        verb = "deletecollection"

    return RequestInfo(
        verb=verb,
        path=path,
        is_resource_request=True,
        api_prefix=api_prefix,
        api_group=api_group,
        api_version=api_version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
    )


def parse_query(raw_query: str) -> dict[str, list[str]]:
    """Split a query as Go's ``url.ParseQuery`` does: ``&`` only, ``+`` is a space."""
    values: dict[str, list[str]] = {}
    for pair in raw_query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        values.setdefault(_unquote_plus(key), []).append(_unquote_plus(value))
    return values


def _unquote_plus(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "surrogateescape")


def _wants_watch(query: dict[str, list[str]]) -> bool:
    values = query.get("watch")
    if not values:
        return False
    value = values[0]
    if not value.isascii():
        # Go compares with Unicode case folding; refuse rather than imitate it.
        raise BadRequestError("the 'watch' query parameter is not understood")
    return value.lower() not in ("0", "false")


def _name_from_field_selector(query: dict[str, list[str]]) -> str:
    """Return the name a ``metadata.name`` field selector requires, if certain.

    Mirrors ``fields.ParseSelector`` and ``RequiresExactMatch``: terms split on
    unescaped commas and sorted; the first ``metadata.name=``/``==`` term wins. A
    selector that does not parse, or that uses parentheses (read differently by some
    API server versions), or a name with ``/``, ``%`` or non-ASCII, gives no name.
    """
    selectors = query.get("fieldSelector")
    if not selectors or "metadata.name" not in selectors[0]:
        return ""
    selector = selectors[0]
    if "(" in selector or ")" in selector or not selector.isascii():
        return ""
    terms = sorted(_split_terms(selector))
    found: str | None = None
    for term in terms:
        if not term:
            continue
        parsed = _split_term(term)
        if parsed is None:
            return ""
        field, operator, value = parsed
        unescaped = _unescape_value(value)
        if unescaped is None:
            return ""
        if found is None and field == "metadata.name" and operator != "!=":
            found = unescaped
    if found is None or found in (".", "..") or "/" in found or "%" in found:
        return ""
    return found


def _split_terms(selector: str) -> list[str]:
    terms: list[str] = []
    start = 0
    escaped = False
    for index, char in enumerate(selector):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(selector[start:index])
            start = index + 1
    terms.append(selector[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for index in range(len(term)):
        for operator in ("!=", "==", "="):
            if term.startswith(operator, index):
                return term[:index], operator, term[index + len(operator) :]
    return None


def _unescape_value(value: str) -> str | None:
    if "\\" not in value and "," not in value and "=" not in value:
        return value
    result: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            if char not in "\\,=":
                return None
            result.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            return None
        else:
            result.append(char)
    return None if escaped else "".join(result)
