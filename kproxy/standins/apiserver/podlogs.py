"""Container logs a test writes and a client reads or follows.

There is no kubelet behind the stand-in, so a test appends lines with ``append`` and
``GET .../pods/NAME/log`` returns them; with ``follow=true`` new lines are streamed
until the pod is deleted or the client goes away, as the kubelet's log stream ends
when the container does (``pkg/kubelet/kuberuntime/logs``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

LogKey = tuple[str, str, str]


@dataclass(slots=True)
class _Buffer:
    chunks: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False


class PodLogs:
    """Log buffers per (namespace, pod, container)."""

    def __init__(self) -> None:
        self._buffers: dict[LogKey, _Buffer] = {}

    def append(self, key: LogKey, text: str) -> None:
        buffer = self._buffer(key)
        buffer.chunks.append(text)
        self._wake(buffer)

    def snapshot(self, key: LogKey) -> tuple[str, int]:
        """The text so far, and the position to follow from."""
        chunks = self._buffer(key).chunks
        return "".join(chunks), len(chunks)

    def end_pod(self, namespace: str, pod: str) -> None:
        """Stop every follower of a deleted pod and forget its logs."""
        for key in [k for k in self._buffers if k[:2] == (namespace, pod)]:
            buffer = self._buffers.pop(key)
            buffer.ended = True
            self._wake(buffer)

    async def follow(self, key: LogKey, start: int) -> AsyncIterator[str]:
        """Yield chunks from index ``start`` on, waiting for new ones, until the end."""
        buffer = self._buffer(key)
        position = start
        while True:
            while position < len(buffer.chunks):
                yield buffer.chunks[position]
                position += 1
            if buffer.ended:
                return
            await buffer.changed.wait()

    def _buffer(self, key: LogKey) -> _Buffer:
        return self._buffers.setdefault(key, _Buffer())

    @staticmethod
    def _wake(buffer: _Buffer) -> None:
        # Every waiter wakes; a fresh event makes the next wait block again.
        changed = buffer.changed
        buffer.changed = asyncio.Event()
        changed.set()
