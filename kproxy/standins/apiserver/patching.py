"""Applying the patch types kube-apiserver accepts on a PATCH.

``handlers/patch.go`` dispatches on the content type: JSON patch (RFC 6902), JSON
merge patch (RFC 7386), strategic merge patch and server-side apply. The stand-in
treats a strategic merge patch as a merge patch whose ``$``-directives
(``$patch``, ``$setElementOrder/...``, ``$retainKeys``, ``$deleteFromPrimitiveList``)
are dropped, which is exact for maps and replaces lists wholesale; and server-side
apply as a merge of the applied configuration, without field ownership.
"""

from __future__ import annotations

import copy
from typing import Any

from . import statuses

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: maps merge, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch as a merge patch, ignoring its directives."""
    return merge_patch(target, _without_directives(patch))


def _without_directives(patch: Any) -> Any:
    if isinstance(patch, dict):
        return {
            key: _without_directives(value)
            for key, value in patch.items()
            if not key.startswith("$")
        }
    if isinstance(patch, list):
        return [_without_directives(item) for item in patch]
    return patch


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch, or raise a 422-like error on a failed step."""
    if not isinstance(operations, list):
        raise statuses.bad_request(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    document = copy.deepcopy(target)
    for operation in operations:
        document = _apply_operation(document, operation)
    return document


def _apply_operation(document: Any, operation: dict[str, Any]) -> Any:
    op = operation.get("op")
    path = _pointer(operation.get("path", ""))
    if op == "add":
        return _add(document, path, copy.deepcopy(operation.get("value")))
    if op == "remove":
        _remove(document, path)
        return document
    if op == "replace":
        _remove(document, path)
        return _add(document, path, copy.deepcopy(operation.get("value")))
    if op == "test":
        if _get(document, path) != operation.get("value"):
            raise _failed(f"testing value {operation.get('path')} failed")
        return document
    if op in ("move", "copy"):
        source = _pointer(operation.get("from", ""))
        value = copy.deepcopy(_get(document, source))
        if op == "move":
            _remove(document, source)
        return _add(document, path, value)
    raise _failed(f"Unexpected kind: {op}")


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise _failed(f"JSON pointer {text!r} does not start with a slash")
    return [part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/")]


def _parent(document: Any, path: list[str]) -> Any:
    return _get(document, path[:-1])


def _get(document: Any, path: list[str]) -> Any:
    value = document
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise _failed(f'doc is missing path: "/{"/".join(path)}": missing value')
    return value


def _add(document: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent, key = _parent(document, path), path[-1]
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        index = len(parent) if key == "-" else int(key) if key.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise _failed(f"add operation does not apply: index {key} out of bounds")
        parent.insert(index, value)
    else:
        raise _failed("add operation does not apply: parent is not a container")
    return document


def _remove(document: Any, path: list[str]) -> None:
    _get(document, path)
    parent, key = _parent(document, path), path[-1]
    if isinstance(parent, dict):
        del parent[key]
    else:
        del parent[int(key)]


def _failed(message: str) -> statuses.ApiError:
    error = statuses.bad_request(message)
    error.status["code"] = 422
    error.status["reason"] = "Invalid"
    return error
