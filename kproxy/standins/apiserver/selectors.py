"""Label and field selectors, parsed as ``labels.Parse`` and ``fields.ParseSelector`` do.

Label selectors (``staging/src/k8s.io/apimachinery/pkg/labels/selector.go``): comma
separated requirements ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``,
``k`` and ``!k``; ``!=`` and ``notin`` also match objects without the label. Field
selectors (``.../pkg/fields/selector.go``) take ``=``, ``==`` and ``!=`` only, on the
fields a resource declares; any other field is refused as the conversion functions
refuse it: ``field label not supported: FIELD``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from . import statuses

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_REQUIREMENT = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)\s*$")


def label_selector(text: str) -> Predicate:
    """Turn ``labelSelector`` into a test on an object, or raise a 400."""
    tests = [_label_requirement(part) for part in _split(text) if part.strip()]
    return lambda obj: all(test(_labels(obj)) for test in tests)


def field_selector(text: str, allowed: tuple[str, ...]) -> Predicate:
    """Turn ``fieldSelector`` into a test on an object, or raise a 400."""
    tests = [_field_requirement(part, allowed) for part in text.split(",") if part]
    return lambda obj: all(test(obj) for test in tests)


def selected_name(text: str) -> str:
    """The name a ``metadata.name=NAME`` field selector scopes a request to, if any."""
    for part in text.split(","):
        match = _EQUALITY.match(part)
        if match and match[1] == "metadata.name" and match[2] in ("=", "=="):
            return match[3]
    return ""


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = obj.get("metadata", {}).get("labels") or {}
    return labels


def _label_requirement(part: str) -> Callable[[Mapping[str, str]], bool]:
    if match := _SET_REQUIREMENT.match(part):
        key, operator = match[1], match[2]
        values = {value.strip() for value in match[3].split(",")}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQUALITY.match(part):
        key, operator, value = match[1], match[2], match[3]
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value
    stripped = part.strip()
    if stripped.startswith("!") and _is_key(stripped[1:]):
        return lambda labels: stripped[1:] not in labels
    if _is_key(stripped):
        return lambda labels: stripped in labels
    raise statuses.bad_request(f"unable to parse requirement: {part.strip()!r}")


def _is_key(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?", text))


def _field_requirement(part: str, allowed: tuple[str, ...]) -> Predicate:
    match = _EQUALITY.match(part)
    if not match:
        raise statuses.bad_request(
            f"invalid selector: '{part}'; can't understand '{part}'"
        )
    field, operator, value = match[1], match[2], match[3]
    if field not in allowed:
        raise statuses.bad_request(f"field label not supported: {field}")
    if operator == "!=":
        return lambda obj: _field_value(obj, field) != value
    return lambda obj: _field_value(obj, field) == value


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for step in path.split("."):
        value = value.get(step) if isinstance(value, Mapping) else None
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)
