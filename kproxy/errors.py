"""kproxy's errors, and the one place they become Kubernetes ``Status`` objects.

The tree::

    KproxyError                      every failure kproxy itself reports
    ├── BadRequestError              400  the request cannot be understood safely
    ├── AuthenticationError          401  the token was checked and rejected
    ├── ForbiddenError               403  the identity may not make this request
    ├── TooManyRequestsError         429  a rate or concurrency limit was reached
    ├── RequestTooLargeError         413  a header or body is over its limit
    ├── UnavailableError             503  something needed to decide is missing
    │   └── CouldNotCheckError       503  the token could not be checked (no keys)
    └── UpstreamError                502  the API server could not be reached
        ├── UpstreamUnavailableError 503
        └── UpstreamTimeoutError     504

    ConfigError                      exit code 2, never an HTTP response

Every HTTP error carries its status code and a machine ``reason`` taken from the
``StatusReason`` values of the Kubernetes API, so kubectl prints it as it prints the API
server's own refusals. Messages follow the API server's style: a lowercase subject,
values quoted, no trailing period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypedDict

STATUS_API_VERSION: Final = "v1"


class StatusDetails(TypedDict, total=False):
    name: str
    group: str
    kind: str
    retryAfterSeconds: int


class Status(TypedDict, total=False):
    """The ``meta/v1`` ``Status`` object, as the API server writes it."""

    kind: str
    apiVersion: str
    metadata: dict[str, Any]
    status: str
    message: str
    reason: str
    details: StatusDetails
    code: int


class KproxyError(Exception):
    """A failure kproxy reports to its client as a Kubernetes ``Status``."""

    status_code: ClassVar[int] = 500
    reason: ClassVar[str] = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int | None = None,
        cause: str = "",
        details: StatusDetails | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.details = details
        # A finer machine reason than ``reason`` for logs and metrics, such as
        # "expired" for a 401; never shown to the client.
        self.cause = cause or self.reason

    def to_status(self) -> Status:
        """Render the error as the body of an HTTP response."""
        return status_object(
            self.status_code,
            self.reason,
            self.message,
            retry_after=self.retry_after,
            details=self.details,
        )


class BadRequestError(KproxyError):
    status_code = 400
    reason = "BadRequest"


class AuthenticationError(KproxyError):
    """The token was examined and is not acceptable: 401, never retried as-is."""

    status_code = 401
    reason = "Unauthorized"


class ForbiddenError(KproxyError):
    status_code = 403
    reason = "Forbidden"


class RequestTooLargeError(KproxyError):
    status_code = 413
    reason = "RequestEntityTooLarge"


class TooManyRequestsError(KproxyError):
    status_code = 429
    reason = "TooManyRequests"


class UnavailableError(KproxyError):
    status_code = 503
    reason = "ServiceUnavailable"


class CouldNotCheckError(UnavailableError):
    """The token may be good but there was nothing to check it against yet."""


class UpstreamError(KproxyError):
    status_code = 502
    reason = "InternalError"


class UpstreamUnavailableError(UpstreamError):
    status_code = 503
    reason = "ServiceUnavailable"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    reason = "Timeout"


def status_object(
    code: int,
    reason: str,
    message: str,
    *,
    retry_after: int | None = None,
    details: StatusDetails | None = None,
) -> Status:
    """Build a failure ``Status`` the way kube-apiserver's ``responsewriters`` do."""
    status: Status = {
        "kind": "Status",
        "apiVersion": STATUS_API_VERSION,
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    merged: StatusDetails = {**(details or {})}
    if retry_after is not None:
        merged["retryAfterSeconds"] = retry_after
    if merged:
        status["details"] = merged
    return status


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong in a configuration or policy file, with where it is."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration or policy file is not acceptable; the command exits with 2."""

    exit_code: ClassVar[int] = 2

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems

    @classmethod
    def single(
        cls, file: str, message: str, *, line: int | None = None, field: str = ""
    ) -> ConfigError:
        return cls([ConfigProblem(file=file, line=line, field=field, message=message)])
