"""Ending long streams when the process stops, so clients see a clean end.

A watch, a followed log or an exec session has no natural end: waiting for it through
the whole grace period only delays the stop, and aiohttp would then cancel its handler,
which cuts the connection mid-stream. kube-apiserver ends its watches when it
terminates and clients re-establish them elsewhere; kproxy does the same.

``Drain`` is one flag per application, set from ``on_shutdown``: aiohttp runs that
after the listener has stopped accepting and before it waits for handlers, so short
requests in flight keep their grace period while the streams end at once. A stream
waits on ``Drain.begun()`` alongside its copying: a watch then finishes its chunked
body with the final chunk (the client sees an ordinary end of stream, as when the
API server's ``timeoutSeconds`` expires), and a tunnel closes both connections.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web


class Drain:
    """Set once when the server stops; streams wait on ``begun()``."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    @property
    def draining(self) -> bool:
        return self._future is not None and self._future.done()

    def begin(self) -> None:
        """Tell every stream to end now, and any stream that starts later at once."""
        future = self.begun()
        if not future.done():
            future.set_result(None)

    def begun(self) -> asyncio.Future[None]:
        """A future done once draining has begun; one shared by every stream.

        One future for all streams, rather than a task per stream waiting on an
        event, keeps the cost of a request to a callback registered and removed.
        """
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future


DRAIN: Final = web.AppKey("drain", Drain)


def install_drain(app: web.Application) -> Drain:
    """Give ``app`` a ``Drain`` that begins when the application shuts down."""
    drain = Drain()
    app[DRAIN] = drain

    async def begin(_: web.Application) -> None:
        drain.begin()

    app.on_shutdown.append(begin)
    return drain


def drain_of(request: web.BaseRequest) -> Drain | None:
    """The request's application's ``Drain``, or ``None`` where none was installed."""
    return request.app.get(DRAIN) if isinstance(request, web.Request) else None
