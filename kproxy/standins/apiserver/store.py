"""In-memory storage with one resourceVersion counter and a bounded event history.

This plays etcd plus the registry (``staging/src/k8s.io/apiserver/pkg/registry/
generic/registry/store.go``) and the watch cache (``.../pkg/storage/cacher/
watch_cache.go``): every write takes the next resourceVersion from a single global
counter, so versions are comparable across resources as clients assume for a list's
``metadata.resourceVersion``. The last ``history_size`` events are kept so a watch may
start from an older version; a version older than the oldest kept event gets ``410
Expired: too old resource version: OLD (OLDEST)``, which makes informers relist.

Writes are registry writes: create fills ``uid``, ``creationTimestamp``,
``resourceVersion`` and ``generation`` and refuses a second object of the same name;
update checks a sent ``resourceVersion`` (409 on a stale one) and, for resources with
a ``status`` subresource, keeps ``status`` on the main resource and everything but
``status`` on the subresource. Deleting a namespace deletes what it holds at once,
where the real namespace controller would do it in the background.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from . import catalog, statuses
from .catalog import ResourceType

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
Object = dict[str, Any]
Key = tuple[ResourceType, str, str]

_INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAMESPACE: ResourceType = next(
    r for r in catalog.RESOURCES if r.plural == "namespaces"
)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change, as a watch stream sends it."""

    type: EventType
    resource: ResourceType
    object: Object
    resource_version: int


@dataclass(eq=False, slots=True)
class Subscription:
    """A watch's queue of events for one resource, optionally in one namespace."""

    resource: ResourceType
    namespace: str
    queue: asyncio.Queue[WatchEvent] = field(default_factory=asyncio.Queue)

    def wants(self, event: WatchEvent) -> bool:
        if event.resource != self.resource:
            return False
        return not self.namespace or _namespace_of(event.object) == self.namespace


class Store:
    """All objects of the stand-in, the event history and the open watches."""

    def __init__(self, *, history_size: int = 1000, first_version: int = 100) -> None:
        self._objects: dict[Key, Object] = {}
        self._version = first_version
        self._history: deque[WatchEvent] = deque(maxlen=history_size)
        self._oldest_kept = first_version
        self._subscriptions: set[Subscription] = set()
        self.deleted_callbacks: list[Callable[[ResourceType, Object], None]] = []
        for name in _INITIAL_NAMESPACES:
            self.create(_NAMESPACE, "", {"metadata": {"name": name}})

    @property
    def resource_version(self) -> int:
        return self._version

    def get(self, resource: ResourceType, namespace: str, name: str) -> Object:
        """Return a copy of one object, or raise ``NotFound``."""
        found = self._objects.get((resource, namespace, name))
        if found is None:
            raise statuses.not_found(resource.plural, resource.group, name)
        return copy.deepcopy(found)

    def objects(self, resource: ResourceType, namespace: str) -> list[Object]:
        """Return copies of a resource's objects, in namespace and name order."""
        keys = sorted(k for k in self._objects if k[0] == resource)
        return [
            copy.deepcopy(self._objects[key])
            for key in keys
            if not namespace or key[1] == namespace
        ]

    def create(self, resource: ResourceType, namespace: str, obj: Object) -> Object:
        """Store a new object as the registry's ``Create`` does, and return it."""
        obj = copy.deepcopy(obj)
        _check_namespace(resource, namespace, obj)
        if resource.namespaced:
            self._require_namespace(namespace)
        metadata = obj.setdefault("metadata", {})
        name = _assign_name(resource, metadata)
        key = (resource, namespace if resource.namespaced else "", name)
        if key in self._objects:
            raise statuses.already_exists(resource.plural, resource.group, name)
        _fill_type(resource, obj)
        _fill_metadata(resource, metadata, key[1])
        _default(resource, obj)
        return self._write(key, obj, "ADDED")

    def update(
        self,
        resource: ResourceType,
        namespace: str,
        obj: Object,
        *,
        subresource: str = "",
    ) -> Object:
        """Replace an object as the registry's ``Update`` does, and return it."""
        obj = copy.deepcopy(obj)
        _check_namespace(resource, namespace, obj)
        metadata = obj.setdefault("metadata", {})
        name = metadata.get("name", "")
        current = self.get(resource, namespace, name)
        sent_version = metadata.get("resourceVersion", "")
        if sent_version and sent_version != current["metadata"]["resourceVersion"]:
            raise statuses.conflict(resource.plural, resource.group, name)
        obj = _merge_scopes(resource, current, obj, subresource)
        _fill_type(resource, obj)
        _keep_system_metadata(current, obj)
        key = (resource, namespace if resource.namespaced else "", name)
        return self._write(key, obj, "MODIFIED")

    def delete(self, resource: ResourceType, namespace: str, name: str) -> Object:
        """Remove an object at once and return its last state."""
        key = (resource, namespace, name)
        self.get(resource, namespace, name)
        if resource == _NAMESPACE:
            self._delete_contents(name)
        removed = self._objects.pop(key)
        self._version += 1
        removed["metadata"]["resourceVersion"] = str(self._version)
        self._publish(
            WatchEvent("DELETED", resource, copy.deepcopy(removed), self._version)
        )
        for callback in self.deleted_callbacks:
            callback(resource, removed)
        return copy.deepcopy(removed)

    def events_since(self, resource_version: int) -> list[WatchEvent]:
        """Events after a version, or ``410 Expired`` when it is no longer kept."""
        if resource_version < self._oldest_kept:
            raise statuses.expired(
                f"too old resource version: {resource_version} ({self._oldest_kept})"
            )
        return [
            event
            for event in self._history
            if event.resource_version > resource_version
        ]

    def compact(self) -> None:
        """Forget the history, so that a watch from any older version gets a 410."""
        self._history.clear()
        self._oldest_kept = self._version

    def subscribe(self, resource: ResourceType, namespace: str) -> Subscription:
        subscription = Subscription(resource, namespace)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def _write(self, key: Key, obj: Object, event_type: EventType) -> Object:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._objects[key] = obj
        self._publish(WatchEvent(event_type, key[0], copy.deepcopy(obj), self._version))
        return copy.deepcopy(obj)

    def _publish(self, event: WatchEvent) -> None:
        if len(self._history) == self._history.maxlen:
            self._oldest_kept = self._history[0].resource_version
        self._history.append(event)
        for subscription in self._subscriptions:
            if subscription.wants(event):
                subscription.queue.put_nowait(event)

    def _require_namespace(self, namespace: str) -> None:
        if (_NAMESPACE, "", namespace) not in self._objects:
            raise statuses.not_found("namespaces", "", namespace)

    def _delete_contents(self, namespace: str) -> None:
        for key in [k for k in self._objects if k[0].namespaced and k[1] == namespace]:
            self.delete(*key)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._objects))


def now_rfc3339() -> str:
    """The current time as Kubernetes writes ``metav1.Time``: seconds, UTC, ``Z``."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


def _namespace_of(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("namespace", ""))


def _check_namespace(resource: ResourceType, namespace: str, obj: Object) -> None:
    sent = _namespace_of(obj)
    if resource.namespaced and sent and sent != namespace:
        raise statuses.bad_request(
            "the namespace of the provided object does not match the namespace "
            "sent on the request"
        )


def _assign_name(resource: ResourceType, metadata: dict[str, Any]) -> str:
    name = metadata.get("name") or ""
    if not name and metadata.get("generateName"):
        name = metadata["generateName"] + uuid.uuid4().hex[:5]
        metadata["name"] = name
    if not name:
        raise statuses.invalid(
            resource.kind, resource.group, "", "metadata.name",
            "Required value: name or generateName is required",
        )  # fmt: skip
    return str(name)


def _fill_type(resource: ResourceType, obj: Object) -> None:
    obj["apiVersion"] = resource.api_version
    obj["kind"] = resource.kind


def _fill_metadata(
    resource: ResourceType, metadata: dict[str, Any], namespace: str
) -> None:
    if resource.namespaced:
        metadata["namespace"] = namespace
    metadata["uid"] = str(uuid.uuid4())
    metadata["creationTimestamp"] = now_rfc3339()
    metadata["generation"] = 1
    for transient in ("resourceVersion", "deletionTimestamp", "selfLink"):
        metadata.pop(transient, None)


def _default(resource: ResourceType, obj: Object) -> None:
    """Give new objects the state the controllers would give them soon after."""
    if resource.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif resource.kind == "Pod":
        _default_pod(obj)


def _default_pod(pod: Object) -> None:
    # There is no kubelet: a pod runs as soon as it exists, so that logs and exec work.
    spec = pod.setdefault("spec", {})
    containers = spec.setdefault("containers", [])
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("serviceAccountName", "default")
    started = now_rfc3339()
    status = pod.setdefault("status", {})
    status.setdefault("phase", "Running")
    status.setdefault("startTime", started)
    status.setdefault("podIP", "10.0.0.10")
    status.setdefault("conditions", [{"type": "Ready", "status": "True"}])
    status.setdefault(
        "containerStatuses",
        [
            {
                "name": container.get("name", ""),
                "image": container.get("image", ""),
                "imageID": f"{container.get('image', '')}@sha256:{'0' * 64}",
                "containerID": f"containerd://{uuid.uuid4().hex}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
            for container in containers
        ],
    )


def _merge_scopes(
    resource: ResourceType, current: Object, sent: Object, subresource: str
) -> Object:
    if not resource.has_status:
        return sent
    if subresource == "status":
        merged = copy.deepcopy(current)
        merged["status"] = sent.get("status", {})
        merged["metadata"] = sent["metadata"]
        return merged
    if "status" in current:
        sent["status"] = current["status"]
    else:
        sent.pop("status", None)
    return sent


def _keep_system_metadata(current: Object, updated: Object) -> None:
    metadata = updated["metadata"]
    old = current["metadata"]
    for kept in ("uid", "creationTimestamp", "namespace", "name"):
        if kept in old:
            metadata[kept] = old[kept]
    generation = old.get("generation", 1)
    if _spec_of(current) != _spec_of(updated):
        generation += 1
    metadata["generation"] = generation


def _spec_of(obj: Object) -> Object:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
