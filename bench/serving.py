"""Run one kproxy process for a benchmark: ``python -m bench.serving CONFIG``.

It starts ``kproxy.running.Proxy`` exactly as ``kproxy serve`` does, but lets the
harness choose the event loop (``--loop uvloop|asyncio``), so the gain of uvloop is
measured rather than assumed, and prints ``listening URL`` once the port accepts.
Several of these bound to one port with ``--reuse-port`` are kproxy's workers.

While ``Proxy`` cannot start (its wiring is being finished), ``--assemble`` builds the
same request path from its parts: the handler of ``kproxy.app`` (authenticate,
parse, decide, impersonate, forward, record) with the components built from the same
configuration file. It then prints ``assembled`` so the report can say so.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

import kproxy.running
from kproxy.app import COMPONENTS, Components, handle
from kproxy.auth.verifying import TokenAuthenticator
from kproxy.config import load_configuration
from kproxy.observe.audit import AuditLog
from kproxy.observe.metrics import Metrics
from kproxy.policy.reloading import PolicyStore
from kproxy.proxy.upstream import Upstream
from kproxy.running import Proxy


async def serve(config: str, *, reuse_port: bool, assemble: bool) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if assemble:
        await _assembled(config, stopping, reuse_port=reuse_port)
        return
    loaded = load_configuration(config)
    _pass_configured_limits(loaded.settings.limits)
    proxy = Proxy(loaded)
    await proxy.start(reuse_port=reuse_port)
    print("listening", *proxy.addresses, flush=True)
    await stopping.wait()
    await proxy.stop()


def _pass_configured_limits(limits: Any) -> None:
    """Make ``Proxy`` hand the configured ``limits:`` to ``build_app``.

    ``Proxy`` passes only the header bound, so the application falls back to the
    default rate and concurrency limits, which would answer the load generator 429.
    This is the one change of kproxy's behaviour the harness makes, and only until the
    wiring passes the limits itself.
    """
    original = kproxy.running.build_app

    def build_app(components: Any, **options: Any) -> web.Application:
        options.setdefault("limits", limits)
        return original(components, **options)

    kproxy.running.build_app = build_app  # type: ignore[assignment]


async def _assembled(config: str, stopping: asyncio.Event, *, reuse_port: bool) -> None:
    loaded = load_configuration(config)
    settings, base_dir = loaded.settings, loaded.base_dir
    metrics = Metrics(universities=tuple(settings.federation.universities))
    upstream = Upstream.from_settings(settings.upstream, base_dir=base_dir)
    authenticator = TokenAuthenticator(
        settings.authentication, base_dir=base_dir, events=metrics
    )
    await authenticator.start()
    policies = PolicyStore(settings.federation, base_dir=base_dir, events=metrics)
    audit = AuditLog(settings.audit, base_dir=base_dir)
    components = Components(
        authenticator=authenticator,
        policies=policies,
        upstream=upstream,
        metrics=metrics,
        audit=audit,
    )
    # The route of build_app, around the real handler: only the construction differs.
    app = web.Application()
    app[COMPONENTS] = components
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    serving = settings.serving
    site = web.TCPSite(
        runner, serving.address, serving.port, backlog=1024, reuse_port=reuse_port
    )
    await site.start()
    print("listening assembled", serving.address, serving.port, flush=True)
    await stopping.wait()
    await runner.cleanup()
    await authenticator.close()
    await upstream.close()
    audit.close()


def runner(name: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    if name == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--assemble", action="store_true")
    arguments = parser.parse_args()
    runner(arguments.loop)(
        serve(
            arguments.config,
            reuse_port=arguments.reuse_port,
            assemble=arguments.assemble,
        )
    )


if __name__ == "__main__":
    main()
