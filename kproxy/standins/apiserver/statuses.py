"""The ``Status`` objects the stand-in answers failures with, shaped as the real ones.

Messages, reasons and details follow ``staging/src/k8s.io/apimachinery/pkg/api/errors/
errors.go`` (``NewNotFound``, ``NewAlreadyExists``, ``NewConflict``, ``NewForbidden``,
``NewGone``/``NewResourceExpired``, ``NewBadRequest``, ``NewInvalid``,
``NewMethodNotSupported``) and ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
responsewriters/errors.go`` (``forbiddenMessage``). Clients branch on ``reason`` and
``code`` (client-go's ``IsNotFound``, ``IsConflict``, the reflector's 410 handling), so
those must match exactly; kubectl prints ``message``.
"""

from __future__ import annotations

from typing import Any

from kproxy.errors import Status, status_object

__all__ = ["ApiError", "Status", "status_object"]


class ApiError(Exception):
    """A failure answered with a ``Status`` body and its code."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.get("message", ""))
        self.status = status

    @property
    def code(self) -> int:
        return self.status.get("code", 500)


def qualified(resource: str, group: str) -> str:
    """Name a resource as ``GroupResource.String()`` does: ``plural.group``."""
    return f"{resource}.{group}" if group else resource


def _failure(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> ApiError:
    status = status_object(code, reason, message)
    if details is not None:
        status["details"] = {k: v for k, v in details.items() if v}  # type: ignore[typeddict-item]
    return ApiError(status)


def _details(resource: str, group: str, name: str) -> dict[str, Any]:
    return {"name": name, "group": group, "kind": resource}


def not_found(resource: str, group: str, name: str) -> ApiError:
    message = f'{qualified(resource, group)} "{name}" not found'
    if not name:
        message = f"{qualified(resource, group)} not found"
    return _failure(404, "NotFound", message, _details(resource, group, name))


def already_exists(resource: str, group: str, name: str) -> ApiError:
    message = f'{qualified(resource, group)} "{name}" already exists'
    return _failure(409, "AlreadyExists", message, _details(resource, group, name))


def conflict(resource: str, group: str, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": '
        "the object has been modified; please apply your changes to the latest "
        "version and try again"
    )
    return _failure(409, "Conflict", message, _details(resource, group, name))


def forbidden(resource: str, group: str, name: str, detail: str) -> ApiError:
    """A 403 whose message reads as ``NewForbidden`` builds it."""
    if not resource:
        message = f"forbidden: {detail}"
    elif not name:
        message = f"{qualified(resource, group)} is forbidden: {detail}"
    else:
        message = f'{qualified(resource, group)} "{name}" is forbidden: {detail}'
    return _failure(403, "Forbidden", message, _details(resource, group, name))


def expired(message: str) -> ApiError:
    return _failure(410, "Expired", message)


def gone(message: str) -> ApiError:
    return _failure(410, "Gone", message)


def bad_request(message: str) -> ApiError:
    return _failure(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return _failure(401, "Unauthorized", "Unauthorized")


def invalid(kind: str, group: str, name: str, field: str, problem: str) -> ApiError:
    message = f'{qualified(kind, group)} "{name}" is invalid: {field}: {problem}'
    details: dict[str, Any] = {"name": name, "group": group, "kind": kind}
    details["causes"] = [
        {"reason": "FieldValueInvalid", "message": problem, "field": field}
    ]
    return _failure(422, "Invalid", message, details)


def method_not_supported(resource: str, group: str, action: str) -> ApiError:
    kind = qualified(resource, group)
    message = f'{action} is not supported on resources of kind "{kind}"'
    details = {"group": group, "kind": resource}
    return _failure(405, "MethodNotAllowed", message, details)


def unsupported_media_type(accepted: tuple[str, ...]) -> ApiError:
    message = (
        "the body of the request was in an unknown format - accepted media types "
        f"include: {', '.join(accepted)}"
    )
    return _failure(415, "UnsupportedMediaType", message)


def server_error(code: int, message: str) -> ApiError:
    reasons = {503: "ServiceUnavailable", 504: "Timeout"}
    return _failure(code, reasons.get(code, "InternalError"), message)


def success(resource: str, group: str, name: str, uid: str) -> dict[str, Any]:
    """The ``Status`` a delete returns when it does not return the object."""
    details = {"name": name, "group": group, "kind": resource, "uid": uid}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {k: v for k, v in details.items() if v},
    }
