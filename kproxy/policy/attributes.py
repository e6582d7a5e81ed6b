"""Kubernetes request attributes, parsed from a request as kube-apiserver parses them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a request asks for, in the terms RBAC rules are written in.

    For a non-resource request (``/version``, ``/openapi/v3``) ``is_resource_request``
    is false, ``path`` is set and the resource fields are empty; ``verb`` is then the
    lower-cased HTTP method, as the API server sets it.
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
