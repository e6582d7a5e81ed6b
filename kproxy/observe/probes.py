"""Health probes and metrics, on a port of their own without authentication.

The endpoints and their output follow kube-apiserver, so the same kubelet probes,
scripts and habits work:

- ``/livez``: the process runs and its event loop answers; nothing else is checked,
  because restarting kproxy cures none of the things readiness watches for;
- ``/readyz``: every named readiness check passes (configuration and policies loaded,
  keys for each required issuer, the API server answering); ``/readyz/NAME`` runs one
  check; ``?verbose`` lists them as ``[+]name ok`` and ``[-]name failed``, and
  ``?exclude=NAME`` leaves one out;
- ``/healthz``: the same as ``/readyz``, for older tooling;
- ``/metrics``: Prometheus' text format.

This port is reachable without a token, so a failing check's reason is withheld from
the response, as the API server withholds it, and written to kproxy's log instead when
the check starts failing. A check that does not answer within ``CHECK_TIMEOUT`` seconds
fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from kproxy.observe.metrics import Metrics

logger = logging.getLogger(__name__)

CHECK_TIMEOUT: Final = 5.0


class ReadinessCheck(Protocol):
    """One condition for serving: returns ``None`` when met, else a reason.

    Raising counts as failing, with the exception as the reason.
    """

    def __call__(self) -> Awaitable[str | None]: ...


class ShutdownCheck:
    """A readiness check that fails once termination has begun.

    Failing readiness first lets the Service stop sending new connections while the
    requests already in flight drain, as the API server's ``shutdown`` check does.
    """

    def __init__(self) -> None:
        self.terminating = False

    def begin(self) -> None:
        self.terminating = True

    async def __call__(self) -> str | None:
        return "the process is terminating" if self.terminating else None


class _Checks:
    """The readiness checks, and which ones failed last time, to log changes only."""

    def __init__(self, checks: Mapping[str, ReadinessCheck], timeout: float) -> None:
        self.checks = dict(checks)
        self.timeout = timeout
        self.failing: set[str] = set()

    async def run(self, names: list[str]) -> dict[str, str | None]:
        reasons = await asyncio.gather(*(self._run_one(name) for name in names))
        return dict(zip(names, reasons, strict=True))

    async def _run_one(self, name: str) -> str | None:
        reason = await self._reason(name)
        if reason is not None and name not in self.failing:
            logger.warning("readiness check %r failed: %s", name, reason)
            self.failing.add(name)
        elif reason is None and name in self.failing:
            logger.info("readiness check %r passes again", name)
            self.failing.discard(name)
        return reason

    async def _reason(self, name: str) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.checks[name]()
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except Exception as exc:  # a check that raises has failed, whatever the reason
            return str(exc) or type(exc).__name__


CHECKS: Final = web.AppKey("checks", _Checks)
METRICS: Final = web.AppKey("metrics", Metrics)


def build_probe_app(
    *,
    checks: Mapping[str, ReadinessCheck],
    metrics: Metrics,
    timeout: float = CHECK_TIMEOUT,
) -> web.Application:
    """The probe application; serve it on its own port, without TLS or tokens."""
    app = web.Application()
    app[CHECKS] = _Checks(checks, timeout)
    app[METRICS] = metrics
    app.router.add_get("/livez", _livez)
    app.router.add_get("/livez/ping", _livez)
    for endpoint in ("readyz", "healthz"):
        app.router.add_get(f"/{endpoint}", _readiness)
        app.router.add_get(f"/{endpoint}/{{check}}", _readiness)
    app.router.add_get("/metrics", _metrics)
    return app


async def _livez(request: web.Request) -> web.Response:
    if "verbose" in request.query:
        return _text(200, "[+]ping ok\nlivez check passed\n")
    return _text(200, "ok")


async def _readiness(request: web.Request) -> web.Response:
    checks = request.app[CHECKS]
    endpoint = request.path.strip("/").split("/")[0]
    names = _selected(request, checks)
    if names is None:
        return _text(
            404, f"{endpoint} check {request.match_info['check']!r} not found\n"
        )

    reasons = await checks.run(names)
    failed = any(reason is not None for reason in reasons.values())
    if not failed and "verbose" not in request.query:
        return _text(200, "ok")
    lines = [_line(name, reason) for name, reason in reasons.items()]
    lines.append(f"{endpoint} check {'failed' if failed else 'passed'}")
    return _text(500 if failed else 200, "\n".join(lines) + "\n")


def _selected(request: web.Request, checks: _Checks) -> list[str] | None:
    single = request.match_info.get("check")
    if single is not None:
        return [single] if single in checks.checks else None
    excluded = set(request.query.getall("exclude", []))
    return [name for name in checks.checks if name not in excluded]


def _line(name: str, reason: str | None) -> str:
    return f"[+]{name} ok" if reason is None else f"[-]{name} failed: reason withheld"


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")
