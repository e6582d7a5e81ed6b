"""The floor under kproxy: aiohttp relaying to the upstream, and nothing else.

``python -m bench.relay CONFIG`` reads the ``upstream:`` and ``serving:`` sections of a
kproxy configuration and serves on uvloop, as ``kproxy serve`` does, with kproxy's own
``Upstream`` (the same pool, TLS context and credential) and header filters. What it
leaves out is everything kproxy adds to a request: no token is verified, no policy
decides, nobody is impersonated, and no audit event, access line or metric is written.

Measured beside kproxy, it splits kproxy's cost into the part the HTTP stack takes
(aiohttp's server and client, TLS to the upstream) and the part kproxy's own steps
take. It is a yardstick for the benchmark, never a way to run kproxy.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from aiohttp import web

from kproxy.config import load_configuration
from kproxy.proxy.headers import AUTHORIZATION, response_headers, sanitized_headers
from kproxy.proxy.upstream import Upstream


def relay(upstream: Upstream) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        headers = sanitized_headers(request.headers)
        authorization = upstream.authorization()
        if authorization is not None:
            headers[AUTHORIZATION] = authorization
        body = request.content if request.body_exists else None
        answer = await upstream.send(
            request.method, request.raw_path, headers=headers, data=body
        )
        try:
            response = web.StreamResponse(
                status=answer.status,
                reason=answer.reason,
                headers=response_headers(answer.headers),
            )
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            answer.release()

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{path:.*}", handle)
    return app


async def serve(config: str) -> None:
    loaded = load_configuration(config)
    serving = loaded.settings.serving
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    upstream = Upstream.from_settings(
        loaded.settings.upstream, base_dir=loaded.base_dir
    )
    runner = web.AppRunner(
        relay(upstream),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, serving.address, serving.port)
    await site.start()
    print("listening", f"http://{serving.address}:{serving.port}", flush=True)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
        await upstream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    uvloop.run(serve(parser.parse_args().config))


if __name__ == "__main__":
    main()
