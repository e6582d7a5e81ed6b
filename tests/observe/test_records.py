"""A record is assembled from whatever steps of the request ran."""

from __future__ import annotations

import dataclasses

import pytest

from kproxy.policy.decision import Decision
from tests.observe.records import ALICE, allowed_record, unauthenticated_record


def test_an_allowed_request_carries_identity_attributes_and_decision() -> None:
    record = allowed_record()

    assert record.verb == "create"
    assert (record.namespace, record.resource, record.api_version) == (
        "alpha",
        "pods",
        "v1",
    )
    assert record.is_resource_request
    assert record.user == ALICE
    assert (record.issuer, record.subject) == (
        "https://idp.alpha.edu",
        "alice@alpha.edu",
    )
    assert record.university == "alpha"
    assert record.decision == "allow"
    assert record.decided_by == "policies/alpha.yaml: rules[0] (pods)"
    assert record.auth_failure == ""


def test_a_request_refused_at_authentication_has_no_user_and_no_decision() -> None:
    record = unauthenticated_record()

    assert record.user is None
    assert record.decision == "none"
    assert record.verb == "get"
    assert not record.is_resource_request
    assert (record.issuer, record.subject, record.university) == ("", "", "")
    assert record.auth_failure == "expired"


def test_a_denied_request_shows_the_mapped_user_it_refused() -> None:
    denial = Decision(
        allowed=False, decided_by="no rule matched", university="alpha", user=ALICE
    )

    record = allowed_record(decision=denial, user=None, status=403)

    assert record.decision == "deny"
    assert record.user == ALICE


def test_records_are_immutable() -> None:
    record = allowed_record()

    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = 500  # type: ignore[misc]
    assert not hasattr(record, "__dict__")
