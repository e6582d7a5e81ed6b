"""From a request's method, path and query to what it asks for.

Follows ``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``
(``NewRequestInfo``): the decoded path is split on ``/``; ``/api/v1`` and
``/apis/GROUP/VERSION`` start resource paths; ``/api/v1/watch/...`` makes the verb
``watch``; after ``namespaces/NS`` only ``status`` and ``finalize`` belong to the
namespace itself; the method gives the verb, a GET without a name is ``list`` or
``watch`` (when ``watch`` is set and not ``0``/``false``), a DELETE without a name is
``deletecollection``; a ``metadata.name`` field selector names the object of a list
or watch. Anything else is a non-resource path whose verb is the lower-cased method.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import MultiMapping

from . import catalog
from .catalog import ResourceType
from .selectors import selected_name

_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """What one request is about, in ``RequestInfo``'s terms."""

    verb: str
    path: str
    is_resource_request: bool
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    plural: str = ""
    subresource: str = ""
    name: str = ""
    named_by_selector: bool = False
    resource: ResourceType | None = None

    @property
    def parts(self) -> list[str]:
        return self.path.strip("/").split("/")


def parse(method: str, path: str, query: MultiMapping[str]) -> Target:
    """Parse a request as ``NewRequestInfo`` does."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "api":
        return _resource(method, path, query, "", parts[1], parts[2:])
    if len(parts) >= 4 and parts[0] == "apis":
        return _resource(method, path, query, parts[1], parts[2], parts[3:])
    return Target(verb=method.lower(), path=path, is_resource_request=False)


def _resource(
    method: str,
    path: str,
    query: MultiMapping[str],
    group: str,
    version: str,
    parts: list[str],
) -> Target:
    verb = _VERBS.get(method, method.lower())
    watch_prefix = parts[0] == "watch"
    if watch_prefix:
        parts = parts[1:]
    namespace = ""
    if parts and parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in ("status", "finalize"):
            parts = parts[2:]
    plural = parts[0] if parts else ""
    name = parts[1] if len(parts) > 1 else ""
    subresource = parts[2] if len(parts) > 2 else ""
    named_by_selector = False
    if not name and verb in ("get", "delete"):
        verb = _collection_verb(verb, query, watch_prefix)
        name = selected_name(query.get("fieldSelector", ""))
        named_by_selector = bool(name)
    elif watch_prefix:
        verb = "watch"
    return Target(
        verb=verb,
        path=path,
        is_resource_request=True,
        api_group=group,
        api_version=version,
        namespace=namespace,
        plural=plural,
        subresource=subresource,
        name=name,
        named_by_selector=named_by_selector,
        resource=catalog.find(group, version, plural),
    )


def _collection_verb(verb: str, query: MultiMapping[str], watch_prefix: bool) -> str:
    if verb == "delete":
        return "deletecollection"
    if watch_prefix:
        return "watch"
    watch = query.get("watch")
    if watch is not None and watch.lower() not in ("0", "false"):
        return "watch"
    return "list"
