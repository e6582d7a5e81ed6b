"""A lean HTTP/1.1 client on asyncio streams, for latencies and for many watches.

An aiohttp session costs tens of kilobytes and a task per connection; holding ten
thousand idle watches with it would measure the client. This client is a socket, a
reader and a writer: it sends a request head and reads one answer, with
``Content-Length`` or chunked framing, which is all kube-apiserver and the proxies in
front of it use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

READ_LIMIT: Final = 64 * 1024


class ProtocolError(Exception):
    """The server answered something this client cannot frame."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body_bytes: int


def request_head(path: str, host: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Connection:
    """One keep-alive connection; ``get`` may be called again after it returns."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
        return cls(reader, writer)

    async def get(self, head: bytes) -> Answer:
        """Send a prepared request head and read the whole answer."""
        self.writer.write(head)
        status, framing = await self.read_head()
        if framing == "chunked":
            size = 0
            while (data := await self.read_chunk()) is not None:
                size += len(data)
            return Answer(status, size)
        await self.reader.readexactly(framing)
        return Answer(status, framing)

    async def read_head(self) -> tuple[int, int | str]:
        """Read a response head: the status, and a length or ``"chunked"``."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length: int | str = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                length = "chunked"
        return status, length

    async def read_chunk(self) -> bytes | None:
        """One chunk of a chunked body, or ``None`` at its end."""
        size_line = await self.reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError as exc:
            raise ProtocolError(f"bad chunk size {size_line!r}") from exc
        if size == 0:
            await self.reader.readuntil(b"\r\n")
            return None
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def read_line(self) -> bytes:
        """One newline-terminated line of a chunked stream (a watch event)."""
        line = b""
        while not line.endswith(b"\n"):
            data = await self.read_chunk()
            if data is None:
                raise ProtocolError("stream ended before a whole line")
            line += data
        return line

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
