"""Forwarding one ordinary request to the API server and streaming the answer back.

The method, the raw path and the raw query pass byte for byte: kproxy decided on the
request as the API server will parse it, so re-encoding or normalising anything here
would let the two disagree. Bodies stream in both directions without being held in
memory, and every chunk of the answer is written to the client as soon as it arrives,
so watches and followed logs stay live; there is no total timeout.

The body is counted as it streams, against the operator's ``limits.maxBodyBytes``. A
declared ``Content-Length`` over the limit never gets here (``kproxy.app`` refuses it
first); a body without one (``Transfer-Encoding: chunked``) is refused at the chunk
that would take it over, and that chunk is not sent. aiohttp's client reports a body
that stopped as a broken connection and marks it to be closed, so the API server reads
a request cut short, never a complete one, and the connection is not reused. The client
gets the 413 ``Status`` kube-apiserver gives for its own limit, unless the API server
had answered already (a refusal sent before reading the body): that answer is relayed.
A body that stops arriving holds the request until the API server's answer is overdue
(``upstream.responseHeaderTimeoutSeconds``), and is then refused as the client's fault,
a 400, rather than reported as the API server's 504. That is also how a malformed chunk
ends: aiohttp's server parser leaves the body of the request in progress waiting rather
than failing it.

Content is relayed as it is: kproxy neither decompresses nor re-encodes, and it never
follows a redirect (a ``Location`` is the client's business, and following it would
send kproxy's credential somewhere else).

Failures before the answer starts are raised as ``UpstreamError`` and its subclasses
for the caller to render as a ``Status``. Once the answer has started its status line
is already with the client, so a failure mid-stream closes the client connection
without a final chunk: the client sees a truncated stream, exactly as it would if it
had been talking to the API server when that connection broke.

A client that goes away ends the handler (aiohttp cancels it when the server runs with
``handler_cancellation=True``, or the next write fails) and the unfinished upstream
answer is released, which closes that upstream connection instead of reusing it.

When kproxy stops, an answer without a ``Content-Length`` (a watch, a followed log) is
ended at once between two chunks with the final chunk, so the client sees an ordinary
end of stream and reconnects; answers of known length finish within the grace period
(see ``kproxy.proxy.draining``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web

from kproxy.auth.identity import UserInfo
from kproxy.errors import (
    BadRequestError,
    RequestTooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)
from kproxy.proxy.draining import drain_of
from kproxy.proxy.headers import response_headers, upstream_headers
from kproxy.proxy.upstream import Upstream

logger = logging.getLogger(__name__)

# The client's connection is gone or broken; nothing more can be written to it.
_CLIENT_GONE: Final = (ConnectionError, aiohttp.ClientConnectionResetError)


async def forward(
    request: web.Request, upstream: Upstream, user: UserInfo, *, max_body_bytes: int
) -> web.StreamResponse:
    """Send ``request`` to the API server as ``user`` and stream its answer back.

    Raises ``RequestTooLargeError`` (413) when the body passes ``max_body_bytes``
    before the answer starts, ``BadRequestError`` (400) when the body stopped arriving
    before the answer was due, ``UpstreamError`` (502, 503, 504) when no answer could
    be had, and the errors of ``upstream_headers`` when the user or a header cannot
    be sent.
    """
    headers = upstream_headers(
        request.headers,
        user,
        authorization=upstream.authorization(),
        peer=request.remote,
    )
    body = (
        _BoundedBody(request.content, max_body_bytes) if request.body_exists else None
    )
    try:
        answer = await upstream.send(
            request.method,
            _raw_path_qs(request),
            headers=headers,
            data=None if body is None else body.chunks(),
        )
    except UpstreamError as exc:
        # Faults of the client's body are the client's, not the API server's: aiohttp
        # reports the body kproxy stopped as a broken connection, and a body that
        # stops arriving as an API server that did not answer in time.
        if body is not None and body.overflowed:
            raise body.refusal() from None
        if (
            body is not None
            and not body.complete
            and isinstance(exc, UpstreamTimeoutError)
        ):
            raise BadRequestError(
                "the request body stopped arriving before it was complete"
            ) from None
        raise
    try:
        return await _relay(request, answer)
    finally:
        answer.release()


class _BoundedBody:
    """A client's request body on its way upstream, stopped once it passes a limit.

    Only a count is kept, never the bytes, so the body stays streamed.
    """

    __slots__ = ("_content", "_limit", "complete", "overflowed")

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.overflowed = False
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives; raise ``RequestTooLargeError`` past the limit.

        The chunk that passes the limit is not yielded: at most ``limit`` bytes go on.
        """
        counted = 0
        async for chunk in self._content.iter_any():
            counted += len(chunk)
            if counted > self._limit:
                self.overflowed = True
                raise self.refusal()
            yield chunk
        self.complete = True

    def refusal(self) -> RequestTooLargeError:
        # kube-apiserver answers a body over its own limit with this code and reason.
        return RequestTooLargeError(
            f"the request body is larger than the limit of {self._limit} bytes"
        )


def _raw_path_qs(request: web.BaseRequest) -> str:
    url = request.rel_url
    query = url.raw_query_string
    return f"{url.raw_path}?{query}" if query else url.raw_path


async def _relay(
    request: web.Request, answer: aiohttp.ClientResponse
) -> web.StreamResponse:
    # An answer of known length has its first bytes at hand already: its head waits
    # for them, so both leave in one write. A stream's head goes out at once.
    kind = web.StreamResponse if answer.content_length is None else _HeadWithBody
    response = kind(
        status=answer.status,
        reason=answer.reason,
        headers=response_headers(answer.headers),
    )
    await response.prepare(request)
    try:
        finished = await _copy_until_drained(request, answer, response)
    except _CLIENT_GONE:
        logger.debug(
            "client left during %s %s", request.method, request.rel_url.raw_path
        )
        return response
    except (aiohttp.ClientError, OSError) as exc:
        logger.warning(
            "the API server broke off %s %s: %s",
            request.method,
            request.rel_url.raw_path,
            type(exc).__name__,
        )
        _abort(request, response)
        return response
    if not finished:
        logger.debug(
            "ended %s %s: kproxy is stopping", request.method, request.rel_url.raw_path
        )
    with contextlib.suppress(*_CLIENT_GONE):
        await response.write_eof()
    return response


async def _copy_until_drained(
    request: web.Request, answer: aiohttp.ClientResponse, response: web.StreamResponse
) -> bool:
    """Copy the answer; return ``False`` if kproxy began stopping before its end.

    An answer of known length is a short request and keeps the grace period; only
    open-ended ones (watches, followed logs, chunked lists) are ended by a drain.
    """
    drain = drain_of(request)
    if drain is None or answer.content_length is not None:
        await _copy(answer, response)
        return True
    copying = asyncio.create_task(_copy(answer, response), name="kproxy-forward-stream")
    # However this handler ends (aiohttp cancels it when its client leaves, and may
    # do so again while it waits below), the copy's outcome is read when it ends: a
    # write that failed as the client left is not an unretrieved task exception.
    copying.add_done_callback(_read_outcome)
    try:
        await asyncio.wait({copying, drain.begun()}, return_when=FIRST_COMPLETED)
    finally:
        if not copying.done():
            # Cancelled between whole chunks: the client has no partial one.
            copying.cancel()
        await asyncio.wait({copying})
    if copying.cancelled():
        return False
    copying.result()
    return True


def _read_outcome(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _copy(answer: aiohttp.ClientResponse, response: web.StreamResponse) -> None:
    async for chunk in answer.content.iter_any():
        await response.write(chunk)


class _HeadWithBody(web.StreamResponse):
    """A response whose head is sent with its first body bytes, as ``Response``'s is.

    One write and one segment per small answer rather than two; the head still goes
    out at the end of the body when there is none (``HEAD``, an empty answer).
    """

    _send_headers_immediately = False


def _abort(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.force_close()
    transport = request.transport
    if transport is not None:
        transport.close()
