"""Prometheus metrics: what kproxy counts, under labels that cannot grow without bound.

A label value is a new time series for as long as the process lives, so no label ever
takes a username, a token, a path or anything else a client chooses. Client-driven
values are mapped onto closed sets first: the verb onto Kubernetes verbs and HTTP
methods, the status onto three-digit codes, the university onto the configured names
or ``none``. Values that come from the operator's files (issuers, upstream error kinds,
policy file names) are accepted up to a fixed number of distinct values, then counted
as ``other``.

``Metrics`` is also the events object the authentication and policy packages report
to: they call ``token_cache``, ``authentication_failed``, ``key_fetch``,
``policy_reload`` and ``grants_synced`` and never see Prometheus. Each instance has its
own registry, so tests and several proxies in one process do not share counts.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kproxy import __version__
from kproxy.auth.events import FAILURE_REASONS
from kproxy.observe.records import RequestRecord
from kproxy.policy.attributes import NON_RESOURCE_VERBS, RESOURCE_VERBS

logger = logging.getLogger(__name__)

KeyAgeSource = Callable[[], Mapping[str, float | None]]
ExpirySource = Callable[[], float | None]

T = TypeVar("T")

NONE: Final = "none"
OTHER: Final = "other"

KNOWN_VERBS: Final = frozenset((*RESOURCE_VERBS, *NON_RESOURCE_VERBS, "connect"))

# kube-apiserver's request duration buckets, so dashboards compare like with like.
LATENCY_BUCKETS: Final = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0,
    6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip

MAX_OPERATOR_LABEL_VALUES: Final = 64


class BoundedLabel:
    """Pass label values through until ``limit`` distinct ones were seen, then ``other``.

    For values that come from configuration rather than from clients: an operator who
    configures a hundred issuers still gets a bounded series count, and a bug that
    passes a client value here cannot create series without end.
    """

    def __init__(self, limit: int = MAX_OPERATOR_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


class Metrics:
    """kproxy's metrics and the events objects of authentication and policy."""

    def __init__(
        self,
        *,
        universities: Iterable[str] = (),
        key_ages: KeyAgeSource | None = None,
        certificate_expiry: ExpirySource | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._universities: frozenset[str] = frozenset(universities)
        self._issuer = BoundedLabel()
        self._upstream_kind = BoundedLabel()
        self._policy_university = BoundedLabel()
        self._callbacks = _CallbackCollector(key_ages, certificate_expiry)
        self.registry.register(self._callbacks)
        self._define()

    def _define(self) -> None:
        registry = self.registry
        Gauge(
            "kproxy_build_info",
            "Always 1; the labels tell which kproxy is running.",
            ["version"],
            registry=registry,
        ).labels(__version__).set(1)
        self.requests = Counter(
            "kproxy_requests",
            "Requests served, by verb, HTTP status code and university.",
            ["verb", "code", "university"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "kproxy_request_duration_seconds",
            "Time from receiving a request to the end of its response, by verb; "
            "for watch and tunnels, the duration of the stream.",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.authentication_failures = Counter(
            "kproxy_authentication_failures",
            "Bearer tokens refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.token_cache_requests = Counter(
            "kproxy_token_cache_requests",
            "Lookups of verified tokens in the cache, by result (hit or miss).",
            ["result"],
            registry=registry,
        )
        self.key_fetches = Counter(
            "kproxy_key_fetches",
            "Fetches of an issuer's signing keys (JWKS), failed or not.",
            ["issuer"],
            registry=registry,
        )
        self.key_fetch_errors = Counter(
            "kproxy_key_fetch_errors",
            "Fetches of an issuer's signing keys that failed; the last keys are kept.",
            ["issuer"],
            registry=registry,
        )
        self.policy_reloads = Counter(
            "kproxy_policy_reloads",
            "Loads of a university's policy file, by result (success or failure).",
            ["university", "result"],
            registry=registry,
        )
        self.grant_syncs = Counter(
            "kproxy_grant_syncs",
            "Synchronisations of NamespaceGrant objects, by result.",
            ["result"],
            registry=registry,
        )
        self.open_watches = Gauge(
            "kproxy_open_watches",
            "Watch requests being streamed now.",
            registry=registry,
        )
        self.open_tunnels = Gauge(
            "kproxy_open_tunnels",
            "Upgraded connections (exec, attach, port-forward) open now.",
            registry=registry,
        )
        self.upstream_errors = Counter(
            "kproxy_upstream_errors",
            "Failures talking to the API server, by kind.",
            ["kind"],
            registry=registry,
        )
        self.audit_events_dropped = Counter(
            "kproxy_audit_events_dropped",
            "Audit events lost because the writer fell behind or could not write.",
            registry=registry,
        )

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    def set_universities(self, names: Iterable[str]) -> None:
        """Replace the names the ``university`` label may take (after a reload)."""
        self._universities = frozenset(names)

    def set_key_age_source(self, source: KeyAgeSource) -> None:
        self._callbacks.key_ages = source

    def set_certificate_expiry_source(self, source: ExpirySource) -> None:
        self._callbacks.certificate_expiry = source

    def observe(self, record: RequestRecord) -> None:
        verb = record.verb if record.verb in KNOWN_VERBS else OTHER
        code = str(record.status) if 100 <= record.status <= 599 else OTHER
        self.requests.labels(verb, code, self._university(record.university)).inc()
        self.request_duration.labels(verb).observe(max(record.latency, 0.0))

    def token_cache(self, *, hit: bool) -> None:
        self.token_cache_requests.labels("hit" if hit else "miss").inc()

    def authentication_failed(self, reason: str) -> None:
        label = reason if reason in FAILURE_REASONS else OTHER
        self.authentication_failures.labels(label).inc()

    def key_fetch(self, issuer: str, *, ok: bool) -> None:
        label = self._issuer(issuer)
        self.key_fetches.labels(label).inc()
        if not ok:
            self.key_fetch_errors.labels(label).inc()

    def policy_reload(self, university: str, *, ok: bool) -> None:
        # Policy file names come from the operator's directory, not from clients,
        # so a file that does not load yet is still counted under its own name.
        label = self._policy_university(university) if university else NONE
        self.policy_reloads.labels(label, _result(ok)).inc()

    def grants_synced(self, *, ok: bool) -> None:
        self.grant_syncs.labels(_result(ok)).inc()

    def watch_opened(self) -> None:
        self.open_watches.inc()

    def watch_closed(self) -> None:
        self.open_watches.dec()

    def tunnel_opened(self) -> None:
        self.open_tunnels.inc()

    def tunnel_closed(self) -> None:
        self.open_tunnels.dec()

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors.labels(self._upstream_kind(kind)).inc()

    def audit_dropped(self) -> None:
        self.audit_events_dropped.inc()

    def _university(self, name: str) -> str:
        return name if name in self._universities else NONE


def _result(ok: bool) -> str:
    return "success" if ok else "failure"


class _CallbackCollector(Collector):
    """Gauges whose values are read from their owners at scrape time."""

    def __init__(
        self, key_ages: KeyAgeSource | None, certificate_expiry: ExpirySource | None
    ) -> None:
        self.key_ages = key_ages
        self.certificate_expiry = certificate_expiry

    def collect(self) -> Iterator[Metric]:
        yield self._key_ages()
        expiry = self._certificate_expiry()
        if expiry is not None:
            yield expiry

    def describe(self) -> Iterator[Metric]:
        # Describing without calling the sources keeps registration free of I/O.
        return iter(())

    def _key_ages(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "kproxy_keys_age_seconds",
            "Seconds since each issuer's signing keys were last fetched; +Inf when "
            "kproxy has no keys for it.",
            labels=["issuer"],
        )
        no_issuers: Mapping[str, float | None] = {}
        for issuer, age in _read(self.key_ages, no_issuers).items():
            family.add_metric([issuer], math.inf if age is None else age)
        return family

    def _certificate_expiry(self) -> GaugeMetricFamily | None:
        not_after = _read(self.certificate_expiry, None)
        if not_after is None:
            return None
        return GaugeMetricFamily(
            "kproxy_serving_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires, in seconds since the epoch.",
            value=not_after,
        )


def _read(source: Callable[[], T] | None, default: T) -> T:
    if source is None:
        return default
    try:
        return source()
    except Exception:
        # A scrape must not fail because one source did: report the rest.
        logger.exception("a metrics source failed")
        return default
