"""Request ids: unique, and shaped as the API server's audit ids are."""

from __future__ import annotations

import uuid

from kproxy.app import RequestIds


def test_request_ids_are_version_4_uuids_and_never_repeat() -> None:
    ids = RequestIds()

    issued = [ids.next() for _ in range(1000)]

    assert len(set(issued)) == 1000
    assert all(uuid.UUID(value).version == 4 for value in issued)
    assert all(str(uuid.UUID(value)) == value for value in issued)


def test_request_ids_of_two_processes_do_not_collide() -> None:
    first, second = RequestIds(), RequestIds()

    assert first.next() != second.next()
    assert first.next()[:24] != second.next()[:24]
