"""The impersonation filter, as kube-apiserver runs it before authorization.

Read from ``staging/src/k8s.io/apiserver/pkg/endpoints/filters/impersonation/
impersonation.go`` (``WithImpersonation``, ``buildImpersonationRequests``,
``unescapeExtraKey``), the 1.32 behaviour without constrained impersonation:

- ``Impersonate-User`` empty or absent means no impersonation, unless groups, a uid or
  extras are asked for, which is a 400 naming the requests.
- A user ``system:serviceaccount:NS:NAME`` is checked as the service account NAME in
  NS and, when no group is asked for, gets the service-account groups.
- Every requested value is authorized on its own, for the *caller*, with verb
  ``impersonate``: ``users``, ``groups``, ``serviceaccounts`` in the core group,
  ``uids`` and ``userextras/<key>`` in ``authentication.k8s.io``. The first denial is
  a 403 rendered by ``responsewriters.Forbidden``.
- Extra keys are the header suffix lower-cased, then percent-decoded (kept as is when
  the decoding fails).
- ``system:authenticated`` is appended unless it or ``system:unauthenticated`` was
  asked for; ``system:anonymous`` gets ``system:unauthenticated`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import unquote

from kproxy.auth.identity import UserInfo

from . import statuses
from .rbac import Attributes, forbidden_detail

_USER = "impersonate-user"
_GROUP = "impersonate-group"
_UID = "impersonate-uid"
_EXTRA_PREFIX = "impersonate-extra-"
_AUTHENTICATION_GROUP = "authentication.k8s.io"
_SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9a-f]{2})")


@dataclass(frozen=True, slots=True)
class _Request:
    """One ``ObjectReference`` of ``buildImpersonationRequests``."""

    kind: str
    name: str
    namespace: str = ""
    api_version: str = ""
    field_path: str = ""

    def go_format(self) -> str:
        """Print as Go's ``%v`` prints an ``ObjectReference``, for the 400 message."""
        fields = (self.kind, self.namespace, self.name, "", self.api_version, "")
        return "{" + " ".join((*fields, self.field_path)) + "}"


def impersonate(
    headers: Iterable[tuple[str, str]],
    requestor: UserInfo,
    authorize: Callable[[Attributes], bool],
) -> UserInfo:
    """Return the user the request acts as, or raise the ``ApiError`` it gets."""
    headers = list(headers)
    requests = _build_requests(headers)
    if not requests:
        return requestor
    groups_specified = any(name.lower() == _GROUP for name, _ in headers)
    username, uid = "", ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    for request in requests:
        attributes = _attributes(request, requestor)
        if request.kind == "ServiceAccount":
            username = f"{_SERVICE_ACCOUNT_PREFIX}{request.namespace}:{request.name}"
            if not groups_specified:
                groups = [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{request.namespace}",
                ]
        elif request.kind == "User":
            username = request.name
        elif request.kind == "Group":
            groups.append(request.name)
        elif request.kind == "UserExtra":
            extra.setdefault(request.field_path, []).append(request.name)
        else:
            uid = request.name
        if not authorize(attributes):
            raise _forbidden(attributes)
    return UserInfo(
        username=username,
        uid=uid,
        groups=tuple(_with_authenticated(username, groups)),
        extra=MappingProxyType({k: tuple(v) for k, v in extra.items()}),
    )


def _build_requests(headers: list[tuple[str, str]]) -> list[_Request]:
    requests: list[_Request] = []
    user = next((v for k, v in headers if k.lower() == _USER), "")
    if user:
        requests.append(_user_request(user))
    requests += [_Request("Group", v) for k, v in headers if k.lower() == _GROUP]
    requests += [
        _Request(
            "UserExtra",
            v,
            api_version="authentication.k8s.io/v1",
            field_path=_extra_key(k[len(_EXTRA_PREFIX) :]),
        )
        for k, v in headers
        if k.lower().startswith(_EXTRA_PREFIX)
    ]
    uid = next((v for k, v in headers if k.lower() == _UID), "")
    if uid:
        requests.append(_Request("UID", uid, api_version="authentication.k8s.io/v1"))
    if requests and not user:
        listed = " ".join(request.go_format() for request in requests)
        raise statuses.bad_request(f"requested [{listed}] without impersonating a user")
    return requests


def _user_request(username: str) -> _Request:
    if username.startswith(_SERVICE_ACCOUNT_PREFIX):
        parts = username[len(_SERVICE_ACCOUNT_PREFIX) :].split(":")
        if len(parts) == 2 and all(parts):
            return _Request("ServiceAccount", parts[1], namespace=parts[0])
    return _Request("User", username)


def _extra_key(encoded: str) -> str:
    # url.PathUnescape fails on a malformed escape; the key is then kept as sent.
    lowered = encoded.lower()
    if _MALFORMED_ESCAPE.search(lowered):
        return lowered
    return unquote(lowered, errors="replace")


def _attributes(request: _Request, requestor: UserInfo) -> Attributes:
    resources = {
        "ServiceAccount": ("", "serviceaccounts", ""),
        "User": ("", "users", ""),
        "Group": ("", "groups", ""),
        "UserExtra": (_AUTHENTICATION_GROUP, "userextras", request.field_path),
        "UID": (_AUTHENTICATION_GROUP, "uids", ""),
    }
    group, resource, subresource = resources[request.kind]
    return Attributes(
        user=requestor,
        verb="impersonate",
        resource_request=True,
        api_group=group,
        api_version="v1",
        namespace=request.namespace,
        resource=resource,
        subresource=subresource,
        name=request.name,
    )


def _forbidden(attributes: Attributes) -> statuses.ApiError:
    return statuses.forbidden(
        attributes.resource,
        attributes.api_group,
        attributes.name,
        forbidden_detail(attributes),
    )


def _with_authenticated(username: str, groups: list[str]) -> list[str]:
    if username == "system:anonymous":
        if "system:unauthenticated" not in groups:
            groups.append("system:unauthenticated")
        return groups
    if not {"system:authenticated", "system:unauthenticated"} & set(groups):
        groups.append("system:authenticated")
    return groups
