"""The resource types the stand-in serves, with what discovery says about each.

Names, kinds, short names, verbs and field selectors are those of the built-in types
(``pkg/registry/core/*/storage``) and of the custom resources kproxy's users work
with: Admiralty's ``PodChaperon`` (namespaced) and ``ClusterSummary`` (cluster-scoped),
and kproxy's own ``NamespaceGrant``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ALL_VERBS: Final = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
_NAME_FIELDS: Final = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One served resource: its group, version, kind and plural, and its scope."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = _NAME_FIELDS
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_POD_FIELDS: Final = (
    *_NAME_FIELDS,
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS: Final = (
    *_NAME_FIELDS,
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

RESOURCES: Final = (
    ResourceType("", "v1", "Namespace", "namespaces", False, ("ns",), ("status",),
                 (*_NAME_FIELDS, "status.phase")),
    ResourceType("", "v1", "Pod", "pods", True, ("po",),
                 ("status", "log", "exec", "attach", "portforward", "eviction"),
                 _POD_FIELDS, ("all",)),
    ResourceType("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    ResourceType("", "v1", "Secret", "secrets", True, (), (), (*_NAME_FIELDS, "type")),
    ResourceType("", "v1", "Service", "services", True, ("svc",), ("status",),
                 categories=("all",)),
    ResourceType("", "v1", "Event", "events", True, ("ev",), (), _EVENT_FIELDS),
    ResourceType("", "v1", "Node", "nodes", False, ("no",), ("status",),
                 (*_NAME_FIELDS, "spec.unschedulable")),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    ResourceType("multicluster.admiralty.io", "v1alpha1", "PodChaperon",
                 "podchaperons", True, (), ("status",)),
    ResourceType("multicluster.admiralty.io", "v1alpha1", "ClusterSummary",
                 "clustersummaries", False),
    ResourceType("kproxy.io", "v1alpha1", "NamespaceGrant", "namespacegrants", True,
                 (), ("status",)),
)  # fmt: skip


def find(group: str, version: str, plural: str) -> ResourceType | None:
    """Look a resource up by the path segments that name it."""
    for resource in RESOURCES:
        if (resource.group, resource.version, resource.plural) == (
            group,
            version,
            plural,
        ):
            return resource
    return None


def group_versions() -> dict[str, list[str]]:
    """Every served group (``""`` is the core group) and its versions, in order."""
    served: dict[str, list[str]] = {}
    for resource in RESOURCES:
        versions = served.setdefault(resource.group, [])
        if resource.version not in versions:
            versions.append(resource.version)
    return served
