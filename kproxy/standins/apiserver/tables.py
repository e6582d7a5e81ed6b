"""Server-side printing: the ``meta.k8s.io`` ``Table`` kubectl asks for.

``kubectl get`` sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...``
and prints the rows it gets back (``staging/src/k8s.io/apiserver/pkg/endpoints/
handlers/response.go``, ``transformResponseObject``). The columns are the first ones
``pkg/printers/internalversion/printers.go`` defines for pods, config maps, secrets and
namespaces; other resources get Name and Age, as custom resources without printer
columns do. Each row carries the object's metadata (``includeObject=Metadata``, the
default), the whole object (``Object``) or nothing (``None``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from .catalog import ResourceType

Object = dict[str, Any]
Column = tuple[str, str, str, int, Callable[[Object], Any]]


def wants_table(accept: str) -> str:
    """The ``meta.k8s.io`` version of ``Table`` the client accepts first, or ``""``."""
    for media_range in accept.split(","):
        params = dict(
            part.strip().split("=", 1)
            for part in media_range.split(";")[1:]
            if "=" in part
        )
        is_table = params.get("as") == "Table" and params.get("g") == "meta.k8s.io"
        if is_table and params.get("v") in ("v1", "v1beta1"):
            return params["v"]
    return ""


def table(
    resource: ResourceType,
    objects: list[Object],
    *,
    version: str,
    resource_version: str,
    include_object: str = "Metadata",
    with_columns: bool = True,
    continue_token: str = "",
) -> Object:
    columns = _columns(resource)
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    definitions = [
        {"name": n, "type": t, "format": f, "description": n, "priority": p}
        for n, t, f, p, _ in columns
    ]
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": metadata,
        "columnDefinitions": definitions if with_columns else [],
        "rows": [_row(obj, columns, include_object) for obj in objects],
    }


def _row(obj: Object, columns: list[Column], include_object: str) -> Object:
    row: Object = {"cells": [cell(obj) for *_, cell in columns]}
    if include_object == "Object":
        row["object"] = obj
    elif include_object != "None":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {}),
        }
    return row


def _name(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _age(obj: Object) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _pod_ready(pod: Object) -> str:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    ready = sum(1 for status in statuses if status.get("ready"))
    return f"{ready}/{len(pod.get('spec', {}).get('containers', []))}"


def _pod_restarts(pod: Object) -> int:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    return sum(int(status.get("restartCount", 0)) for status in statuses)


def _columns(resource: ResourceType) -> list[Column]:
    name: Column = ("Name", "string", "name", 0, _name)
    age: Column = ("Age", "string", "", 0, _age)
    if resource.kind == "Pod":
        return [
            name,
            ("Ready", "string", "", 0, _pod_ready),
            ("Status", "string", "", 0, lambda o: o.get("status", {}).get("phase", "")),
            ("Restarts", "string", "", 0, _pod_restarts),
            age,
            (
                "IP",
                "string",
                "",
                1,
                lambda o: o.get("status", {}).get("podIP", "<none>"),
            ),
        ]
    if resource.kind == "ConfigMap":
        return [
            name,
            ("Data", "integer", "", 0, lambda o: len(o.get("data") or {})),
            age,
        ]
    if resource.kind == "Secret":
        return [
            name,
            ("Type", "string", "", 0, lambda o: o.get("type", "Opaque")),
            ("Data", "integer", "", 0, lambda o: len(o.get("data") or {})),
            age,
        ]
    if resource.kind == "Namespace":
        status: Column = ("Status", "string", "", 0, lambda o: o["status"]["phase"])
        return [name, status, age]
    return [name, age]
