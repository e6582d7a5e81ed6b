"""A running kproxy: its components, its two listeners and its background tasks.

``Proxy`` is what ``kproxy serve``, the demo and the functional tests start. It builds
every component from a validated configuration, starts the tasks that keep snapshots
fresh (issuer keys, policy files, namespace grants, the serving certificate), serves
the proxy and the probes, and on ``stop`` drains: readiness fails first, the listener
stops accepting, requests in flight get the grace period, and what is still open after
it (a watch, a tunnel) is ended.

The configuration file is watched too. When it changes and still validates, the
sections that describe decisions (``authentication``, ``federation``, ``limits``
beyond the HTTP server's own header and idle bounds, ``impersonation``, ``logging``)
take effect for new requests: a new generation of components is built beside the
running one and swapped in, and requests in flight finish with the one they started
with. The sections that describe the process (``serving``, ``upstream``, ``audit``)
need a restart; a change there is reported and otherwise left alone. A file that does
not validate keeps the running configuration and reports every problem.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from kproxy.app import COMPONENTS, Components, LiveComponents, bounds_of, build_app
from kproxy.auth.verifying import TokenAuthenticator
from kproxy.certificates import ServingCertificate
from kproxy.config import LoadedConfiguration, load_configuration
from kproxy.errors import ConfigError, KproxyError
from kproxy.limiting import Limiter
from kproxy.observe.access import configure_logging
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
CONFIG_POLL_SECONDS: Final = 2.0
RESTART_ONLY: Final = ("serving", "upstream", "audit")


@dataclass(slots=True)
class _Shared:
    """What lives as long as the process: built once, kept across reloads."""

    metrics: Metrics
    upstream: Upstream
    audit: AuditLog


@dataclass(slots=True)
class _Generation:
    """The components built from one version of the configuration file."""

    components: Components
    stack: AsyncExitStack
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.stack.aclose()


class Proxy:
    """kproxy's process-level lifecycle: ``start``, then ``stop`` once."""

    def __init__(self, loaded: LoadedConfiguration) -> None:
        self.loaded = loaded
        self.grace_period = loaded.settings.serving.shutdown_grace_period_seconds
        self.addresses: list[str] = []
        self.probe_addresses: list[str] = []
        self.shutdown = ShutdownCheck()
        self.config_poll_seconds = CONFIG_POLL_SECONDS
        self._live: LiveComponents | None = None
        self._generation: _Generation | None = None
        # Every generation built and not yet closed, the running one included: a
        # reload cut short by stop() leaves nothing open behind it.
        self._unclosed: list[_Generation] = []
        self._reloading = asyncio.Lock()
        self._stack = AsyncExitStack()
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def components(self) -> Components:
        """The components new requests use."""
        if self._live is None:
            raise RuntimeError("the proxy has not been started")
        return self._live.current

    async def start(self, *, reuse_port: bool = False) -> None:
        """Build the components and listen; raise ``ConfigError`` on a bad file."""
        try:
            shared = self._shared()
            self._generation = await self._build(self.loaded, shared)
            await self._listen(self._generation.components, reuse_port=reuse_port)
            watching = self._watch_configuration(shared)
            self._tasks.append(
                asyncio.create_task(watching, name="kproxy-config-watch")
            )
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Fail readiness, stop accepting, drain, then release everything."""
        self.shutdown.begin()
        # A reload under way finishes first, so that no generation is left half
        # closed by cancelling it.
        async with self._reloading:
            for runner in self._runners:
                await runner.cleanup()
            self._runners.clear()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            while self._unclosed:
                await self._unclosed.pop().close()
            self._generation = None
            await self._stack.aclose()

    async def reload(self) -> bool:
        """Apply the configuration file as it is now; return whether it was applied.

        A file that does not validate, or components that cannot be built from it,
        leave the running configuration in place; the problems are logged.
        """
        if self._generation is None or self._live is None:
            raise RuntimeError("the proxy has not been started")
        async with self._reloading:
            return await self._reload(self._generation, self._live)

    async def _reload(self, running: _Generation, live: LiveComponents) -> bool:
        try:
            loaded = load_configuration(self._config_path)
            self._warn_restart_only(loaded)
            generation = await self._build(loaded, self._shared_of(running.components))
        except ConfigError as exc:
            logger.warning(
                "configuration not reloaded, keeping the running one:\n%s", exc
            )
            return False
        self._generation = generation
        live.current = generation.components
        if loaded.settings.logging != self.loaded.settings.logging:
            logging_settings = loaded.settings.logging
            configure_logging(logging_settings.level, logging_settings.format)
        self.loaded = loaded
        await running.close()
        self._unclosed.remove(running)
        logger.info("configuration reloaded from %s", self._config_path)
        return True

    @property
    def _config_path(self) -> Path:
        return Path(self.loaded.document.path)

    def _shared(self) -> _Shared:
        settings = self.loaded.settings
        base_dir = self.loaded.base_dir
        metrics = Metrics(universities=settings.federation.universities)
        upstream = Upstream.from_settings(settings.upstream, base_dir=base_dir)
        self._stack.push_async_callback(upstream.close)
        audit = AuditLog(settings.audit, base_dir=base_dir, events=metrics)
        self._stack.callback(audit.close)
        return _Shared(metrics=metrics, upstream=upstream, audit=audit)

    @staticmethod
    def _shared_of(components: Components) -> _Shared:
        return _Shared(
            metrics=components.metrics,
            upstream=components.upstream,
            audit=components.audit,
        )

    async def _build(self, loaded: LoadedConfiguration, shared: _Shared) -> _Generation:
        """Build the components one configuration describes; raise ``ConfigError``."""
        settings = loaded.settings
        base_dir = loaded.base_dir
        metrics = shared.metrics
        stack = AsyncExitStack()
        generation: _Generation | None = None
        try:
            policies = PolicyStore(
                settings.federation, base_dir=base_dir, events=metrics
            )
            authenticator = TokenAuthenticator(
                settings.authentication, base_dir=base_dir, events=metrics
            )
            stack.push_async_callback(authenticator.close)
            await authenticator.start()
            components = Components(
                authenticator=authenticator,
                policies=policies,
                upstream=shared.upstream,
                metrics=metrics,
                audit=shared.audit,
                limiter=Limiter(bounds_of(settings.limits)),
                max_body_bytes=settings.limits.max_body_bytes,
                provenance=settings.impersonation.provenance,
            )
            generation = _Generation(components=components, stack=stack)
            self._unclosed.append(generation)
        finally:
            if generation is None:
                await stack.aclose()
        metrics.set_universities(settings.federation.universities)
        metrics.set_key_age_source(authenticator.key_ages)
        generation.tasks.append(
            asyncio.create_task(policies.run(), name="kproxy-policy-reload")
        )
        if settings.federation.namespace_grants.enabled:
            watcher = GrantWatcher(
                _UpstreamReader(shared.upstream),
                policies.set_grants,
                guardrails=policies.current.guardrails,
                events=metrics,
            )
            generation.tasks.append(
                asyncio.create_task(watcher.run(), name="kproxy-grant-watch")
            )
        return generation

    def _warn_restart_only(self, loaded: LoadedConfiguration) -> None:
        for section in RESTART_ONLY:
            if getattr(loaded.settings, section) != getattr(
                self.loaded.settings, section
            ):
                logger.warning(
                    "configuration section %r changed; it takes effect at the next "
                    "start",
                    section,
                )
        if (
            loaded.settings.limits.max_header_bytes
            != self.loaded.settings.limits.max_header_bytes
            or loaded.settings.limits.client_idle_timeout_seconds
            != self.loaded.settings.limits.client_idle_timeout_seconds
        ):
            logger.warning(
                "limits.maxHeaderBytes and limits.clientIdleTimeoutSeconds take "
                "effect at the next start"
            )

    async def _watch_configuration(self, shared: _Shared) -> None:
        """Reload when the file changes, including a ConfigMap's ``..data`` swap."""
        seen = _fingerprint(self._config_path)
        while True:
            await asyncio.sleep(self.config_poll_seconds)
            current = _fingerprint(self._config_path)
            if current == seen:
                continue
            seen = current
            try:
                await self.reload()
            except Exception:
                logger.exception("configuration reload failed unexpectedly")

    async def _listen(self, components: Components, *, reuse_port: bool) -> None:
        serving = self.loaded.settings.serving
        ssl_context = await self._serving_tls(components.metrics)
        app = build_app(components, limits=self.loaded.settings.limits)
        self._live = app[COMPONENTS]
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
            if self.components.authenticator.ready():
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


def _fingerprint(path: Path) -> tuple[str, int, int, int] | None:
    # The resolved target changes when Kubernetes swaps a ConfigMap's ..data link,
    # even if the new file has the same size and modification time.
    try:
        resolved = os.path.realpath(path)
        status = os.stat(resolved)
    except OSError:
        return None
    return resolved, status.st_ino, status.st_size, status.st_mtime_ns


def _bound_addresses(runner: web.AppRunner, *, secure: bool) -> list[str]:
    scheme = "https" if secure else "http"
    addresses = []
    for address in runner.addresses:
        host, port = address[0], address[1]
        host = f"[{host}]" if ":" in host else host
        addresses.append(f"{scheme}://{host}:{port}")
    return addresses
