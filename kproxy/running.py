"""A running kproxy: its components, its two listeners and its background tasks.

``Proxy`` is what ``kproxy serve``, the demo and the functional tests start. It builds
every component from a validated configuration, starts the tasks that keep snapshots
fresh (issuer keys, policy files, namespace grants, the serving certificate), serves
the proxy and the probes, and on ``stop`` drains: readiness fails first, the listener
stops accepting, requests in flight get the grace period, and what is still open after
it (a watch, a tunnel) is ended.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from kproxy.app import Components, build_app
from kproxy.auth.verifying import TokenAuthenticator
from kproxy.certificates import ServingCertificate
from kproxy.config import LoadedConfiguration
from kproxy.errors import KproxyError
from kproxy.observe.audit import AuditLog
from kproxy.observe.metrics import Metrics
from kproxy.observe.probes import ReadinessCheck, ShutdownCheck, build_probe_app
from kproxy.policy.reloading import PolicyStore
from kproxy.policy.watching import GrantWatcher
from kproxy.proxy.draining import install_drain
from kproxy.proxy.upstream import Upstream

logger = logging.getLogger(__name__)

LISTEN_BACKLOG: Final = 1024
GRANT_WATCH_SECONDS: Final = 300


class Proxy:
    """kproxy's process-level lifecycle: ``start``, then ``stop`` once."""

    def __init__(self, loaded: LoadedConfiguration) -> None:
        self.loaded = loaded
        self.grace_period = loaded.settings.serving.shutdown_grace_period_seconds
        self.addresses: list[str] = []
        self.probe_addresses: list[str] = []
        self.shutdown = ShutdownCheck()
        self._components: Components | None = None
        self._stack = AsyncExitStack()
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def components(self) -> Components:
        if self._components is None:
            raise RuntimeError("the proxy has not been started")
        return self._components

    async def start(self, *, reuse_port: bool = False) -> None:
        """Build the components and listen; raise ``ConfigError`` on a bad file."""
        try:
            self._components = await self._build_components()
            await self._listen(self._components, reuse_port=reuse_port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Fail readiness, stop accepting, drain, then release everything."""
        self.shutdown.begin()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._stack.aclose()

    async def _build_components(self) -> Components:
        settings = self.loaded.settings
        base_dir = self.loaded.base_dir
        stack = self._stack

        metrics = Metrics(universities=settings.federation.universities)
        policies = PolicyStore(settings.federation, base_dir=base_dir, events=metrics)

        upstream = Upstream.from_settings(settings.upstream, base_dir=base_dir)
        stack.push_async_callback(upstream.close)

        authenticator = TokenAuthenticator(
            settings.authentication, base_dir=base_dir, events=metrics
        )
        stack.push_async_callback(authenticator.close)
        await authenticator.start()
        metrics.set_key_age_source(authenticator.key_ages)

        audit = AuditLog(settings.audit, base_dir=base_dir, events=metrics)
        stack.callback(audit.close)

        self._spawn(policies.run(), name="kproxy-policy-reload")
        if settings.federation.namespace_grants.enabled:
            watcher = GrantWatcher(
                _UpstreamReader(upstream),
                policies.set_grants,
                guardrails=policies.current.guardrails,
                events=metrics,
            )
            self._spawn(watcher.run(), name="kproxy-grant-watch")

        return Components(
            authenticator=authenticator,
            policies=policies,
            upstream=upstream,
            metrics=metrics,
            audit=audit,
            provenance=settings.impersonation.provenance,
        )

    def _spawn(self, work: Any, *, name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _listen(self, components: Components, *, reuse_port: bool) -> None:
        serving = self.loaded.settings.serving
        ssl_context = await self._serving_tls(components.metrics)
        app = build_app(components, limits=self.loaded.settings.limits)
        # Watches and tunnels end when the runner shuts the app down, after the
        # listener stopped accepting; short requests keep the grace period.
        install_drain(app)
        runner = await self._site(
            app,
            serving.address,
            serving.port,
            ssl_context=ssl_context,
            reuse_port=reuse_port,
            shutdown_timeout=self.grace_period,
        )
        self.addresses = _bound_addresses(runner, secure=ssl_context is not None)

        probes = build_probe_app(
            checks=self._readiness_checks(components), metrics=components.metrics
        )
        probe_runner = await self._site(
            probes,
            serving.probes.address,
            serving.probes.port,
            reuse_port=reuse_port,
            shutdown_timeout=1.0,
        )
        self.probe_addresses = _bound_addresses(probe_runner, secure=False)

    async def _site(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool,
        shutdown_timeout: float,
    ) -> web.AppRunner:
        # Cancelling the handler when its client leaves is what frees the upstream
        # connection of an abandoned watch at once, rather than at its next event.
        runner = web.AppRunner(
            app,
            shutdown_timeout=shutdown_timeout,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(
            runner,
            host,
            port,
            ssl_context=ssl_context,
            backlog=LISTEN_BACKLOG,
            reuse_port=reuse_port or None,
        )
        await site.start()
        return runner

    async def _serving_tls(self, metrics: Metrics) -> ssl.SSLContext | None:
        tls = self.loaded.settings.serving.tls
        if tls is None:
            return None
        certificate = ServingCertificate(
            self.loaded.path(tls.cert_file),
            self.loaded.path(tls.key_file),
            poll_interval=tls.reload_interval_seconds,
        )
        await certificate.start()
        self._stack.push_async_callback(certificate.close)
        metrics.set_certificate_expiry_source(lambda: certificate.not_after)
        return certificate.context

    def _readiness_checks(self, components: Components) -> Mapping[str, ReadinessCheck]:
        async def issuers() -> str | None:
            if components.authenticator.ready():
                return None
            return "an issuer has no keys yet"

        async def apiserver() -> str | None:
            try:
                await components.upstream.get_json("/version")
            except KproxyError as exc:
                return exc.message
            return None

        return {"shutdown": self.shutdown, "issuers": issuers, "apiserver": apiserver}


class _UpstreamReader:
    """The policy package's view of the API server: kproxy's own reads, no one else's."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def list_json(self, path: str) -> dict[str, Any]:
        return await self._upstream.get_json(path)

    def watch_events(
        self, path: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        query = urlencode(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(GRANT_WATCH_SECONDS),
            }
        )
        return self._upstream.watch_events(f"{path}?{query}")


def _bound_addresses(runner: web.AppRunner, *, secure: bool) -> list[str]:
    scheme = "https" if secure else "http"
    addresses = []
    for address in runner.addresses:
        host, port = address[0], address[1]
        host = f"[{host}]" if ":" in host else host
        addresses.append(f"{scheme}://{host}:{port}")
    return addresses
