"""What one identity or one university may hold at once, and how fast it may ask.

kproxy is shared: every university's requests go through the same process and, behind
it, the same API server. Without bounds one busy or hostile university could take the
whole pool of upstream connections, or all of kproxy's memory, and everyone else would
wait. Three bounds apply, each after the request was authenticated and admitted, so
that they are charged to someone who proved who they are:

- a request rate per university, as a token bucket: ``burst`` requests at once, then
  ``rate`` a second. An empty bucket is answered with 429, a ``Retry-After`` saying
  when the next token comes, and a ``Status`` with ``retryAfterSeconds``, which
  client-go honours by waiting and retrying;
- requests in flight per identity and per university, watches and tunnels included;
- long-running requests (watches, and exec, attach and port-forward tunnels) per
  identity and per university, because each holds an upstream connection for as long
  as it lives.

A bound of 0 switches that bound off. Unauthenticated traffic is bounded elsewhere: by
the header size limit, the idle timeout on connections and the token size limit.

Counters are plain integers on the event loop: no locks, and a request's slots are
returned in a ``finally`` whatever ends it, so a crash in a stream cannot leak one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from kproxy.errors import TooManyRequestsError

Clock = Callable[[], float]

# Identities are client-controlled keys; counters for idle ones are dropped at once,
# so the table only ever holds identities with something in flight.
_UNBOUNDED: Final = 0


@dataclass(frozen=True, slots=True)
class Bounds:
    """The numbers the limiter enforces; 0 means no bound."""

    requests_per_second: float = 0.0
    burst: int = 0
    in_flight_per_identity: int = _UNBOUNDED
    in_flight_per_university: int = _UNBOUNDED
    long_running_per_identity: int = _UNBOUNDED
    long_running_per_university: int = _UNBOUNDED


@dataclass(slots=True)
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` a second; one request takes one."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token; return 0, or the seconds until one is available."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(slots=True)
class _Counts:
    limit: int
    held: dict[str, int] = field(default_factory=dict)

    def full(self, key: str) -> bool:
        return self.limit > 0 and self.held.get(key, 0) >= self.limit

    def add(self, key: str) -> None:
        self.held[key] = self.held.get(key, 0) + 1

    def remove(self, key: str) -> None:
        left = self.held.get(key, 0) - 1
        if left > 0:
            self.held[key] = left
        else:
            self.held.pop(key, None)


class Slots:
    """The concurrency slots of one request: taken on entry, given back on exit.

    A class rather than a generator, since every request enters one.
    """

    __slots__ = ("_slots",)

    def __init__(self, slots: list[tuple[_Counts, str, str]]) -> None:
        self._slots = slots

    def __enter__(self) -> None:
        for counts, key, what in self._slots:
            if counts.full(key):
                raise TooManyRequestsError(
                    f"too many concurrent {what} {key!r}", retry_after=1
                )
        for counts, key, _ in self._slots:
            counts.add(key)

    def __exit__(self, *exc_info: object) -> None:
        for counts, key, _ in self._slots:
            counts.remove(key)


class Limiter:
    """Admits or refuses requests by rate and by what their callers already hold."""

    def __init__(self, bounds: Bounds, *, clock: Clock = time.monotonic) -> None:
        self.bounds = bounds
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._identities = _Counts(bounds.in_flight_per_identity)
        self._universities = _Counts(bounds.in_flight_per_university)
        self._long_identities = _Counts(bounds.long_running_per_identity)
        self._long_universities = _Counts(bounds.long_running_per_university)

    def check_rate(self, university: str) -> None:
        """Take one request from the university's bucket, or raise a 429 error."""
        if self.bounds.requests_per_second <= 0:
            return
        bucket = self._buckets.get(university)
        if bucket is None:
            capacity = float(max(1, self.bounds.burst))
            bucket = TokenBucket(
                self.bounds.requests_per_second, capacity, capacity, self._clock()
            )
            self._buckets[university] = bucket
        wait = bucket.take(self._clock())
        if wait > 0:
            raise TooManyRequestsError(
                f"too many requests from university {university!r}, "
                "please try again later",
                retry_after=max(1, math.ceil(wait)),
            )

    def in_flight(self, identity: str, university: str, *, long_running: bool) -> Slots:
        """Slots for one request, held while the returned context is open.

        Entering it raises a 429 error when any of them is full.
        """
        slots = [
            (self._identities, identity, "requests for user"),
            (self._universities, university, "requests for university"),
        ]
        if long_running:
            slots += [
                (self._long_identities, identity, "streams for user"),
                (self._long_universities, university, "streams for university"),
            ]
        return Slots(slots)

    def held(self) -> dict[str, int]:
        """Slots held now, by table, for tests and the soak report."""
        return {
            "identities": sum(self._identities.held.values()),
            "universities": sum(self._universities.held.values()),
            "long_running_identities": sum(self._long_identities.held.values()),
            "long_running_universities": sum(self._long_universities.held.values()),
        }
