"""Run one kproxy process for a benchmark: ``python -m bench.serving CONFIG``.

It starts ``kproxy.running.Proxy`` exactly as ``kproxy serve`` does, but lets the
harness choose the event loop (``--loop uvloop|asyncio``), so the gain of uvloop is
measured rather than assumed, and prints ``listening URL`` once the port accepts.
Several of these bound to one port with ``--reuse-port`` are kproxy's workers.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from kproxy.config import load_configuration
from kproxy.running import Proxy


async def serve(config: str, *, reuse_port: bool) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    proxy = Proxy(load_configuration(config))
    await proxy.start(reuse_port=reuse_port)
    print("listening", *proxy.addresses, flush=True)
    await stopping.wait()
    await proxy.stop()


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
    arguments = parser.parse_args()
    runner(arguments.loop)(serve(arguments.config, reuse_port=arguments.reuse_port))


if __name__ == "__main__":
    main()
