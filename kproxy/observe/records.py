"""One request, as the operator sees it afterwards.

The handler builds exactly one ``RequestRecord`` when a request ends, whatever the
outcome, and hands the same value to the access log, the audit trail and the metrics,
so the three never disagree about what happened.

A record holds plain strings only. It never carries the bearer token, a header other
than ``User-Agent`` or the verified claims: whatever is in a record may end up in a log
file that more people can read than the API server's secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kproxy.auth.identity import Identity, UserInfo
from kproxy.policy.attributes import RequestInfo
from kproxy.policy.decision import Decision

DecisionOutcome = Literal["allow", "deny", "none"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one request asked, who asked, what kproxy decided and how it ended.

    ``started_at`` is seconds since the epoch and ``latency`` seconds until the
    response (for a watch or a tunnel: until the stream closed). ``user`` is the
    Kubernetes user kproxy impersonated, or ``None`` when nothing reached the API
    server. ``issuer`` and ``subject`` name the verified token the user was mapped
    from; ``decision`` is ``none`` when the request was refused before any policy was
    consulted, and ``auth_failure`` is then the machine reason.
    """

    request_id: str
    started_at: float
    latency: float
    client_address: str
    method: str
    uri: str
    status: int
    user_agent: str = ""
    verb: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    is_resource_request: bool = False
    user: UserInfo | None = None
    issuer: str = ""
    subject: str = ""
    university: str = ""
    decision: DecisionOutcome = "none"
    decided_by: str = ""
    auth_failure: str = ""

    @classmethod
    def build(
        cls,
        *,
        request_id: str,
        started: float,
        latency: float,
        client_address: str,
        method: str,
        uri: str,
        status: int,
        user_agent: str = "",
        info: RequestInfo | None = None,
        identity: Identity | None = None,
        decision: Decision | None = None,
        user: UserInfo | None = None,
        failure: str = "",
    ) -> RequestRecord:
        """Assemble a record from whatever the request's steps got to produce.

        Any of ``info``, ``identity`` and ``decision`` may be missing: a request
        refused at authentication has none of them and is recorded all the same.
        ``user`` is the user actually impersonated; when it is missing the decision's
        mapped user stands in, so a refusal still shows whom it refused.
        """
        # Before the path is parsed the API server's convention still gives a verb:
        # the lower-cased method, as for a non-resource request.
        attributes = info or RequestInfo(
            verb=method.lower(), path="", is_resource_request=False
        )
        return cls(
            request_id=request_id,
            started_at=started,
            latency=latency,
            client_address=client_address,
            method=method,
            uri=uri,
            status=status,
            user_agent=user_agent,
            verb=attributes.verb,
            api_group=attributes.api_group,
            api_version=attributes.api_version,
            resource=attributes.resource,
            subresource=attributes.subresource,
            namespace=attributes.namespace,
            name=attributes.name,
            is_resource_request=attributes.is_resource_request,
            user=user if user is not None else _mapped_user(decision),
            issuer=identity.issuer if identity else "",
            subject=identity.subject if identity else "",
            university=(decision.university or "") if decision else "",
            decision=_outcome(decision),
            decided_by=decision.decided_by if decision else "",
            auth_failure=failure,
        )


def _mapped_user(decision: Decision | None) -> UserInfo | None:
    return decision.user if decision is not None else None


def _outcome(decision: Decision | None) -> DecisionOutcome:
    if decision is None:
        return "none"
    return "allow" if decision.allowed else "deny"
