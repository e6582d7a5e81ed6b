"""A deterministic fake of what runs in a container, for exec and attach.

Commands (the ``command`` query parameters, or ``sh -c "..."``):

- ``echo ARGS``: ARGS joined by spaces and a newline on stdout.
- ``echo-stderr ARGS``: the same on stderr.
- ``cat``: stdin copied to stdout until stdin is closed.
- ``whoami``: the effective user's name; ``id`` prints name, uid and groups.
- ``stty size``: the last terminal size the client sent, ``ROWS COLUMNS``.
- ``sleep N``: waits N seconds (capped at 30).
- ``exit N``: ends with exit code N.

An unknown command fails as the container runtime fails it, with an error ``Status``.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kproxy.auth.identity import UserInfo

Write = Callable[[bytes], Awaitable[None]]


class CommandNotFoundError(Exception):
    """The executable does not exist in the fake container."""


@dataclass(slots=True)
class Terminal:
    """What a command can use: its streams, its user and the terminal size."""

    user: UserInfo
    stdout: Write
    stderr: Write
    stdin: asyncio.Queue[bytes | None]
    size: tuple[int, int] = field(default=(24, 80))


async def run(command: list[str], terminal: Terminal) -> int:
    """Run a command and return its exit code."""
    if not command:
        raise CommandNotFoundError("")
    name, args = command[0], command[1:]
    if name in ("sh", "/bin/sh", "bash") and args[:1] == ["-c"] and len(args) > 1:
        return await run(shlex.split(args[1]), terminal)
    program = _PROGRAMS.get(name)
    if program is None:
        raise CommandNotFoundError(name)
    return await program(args, terminal)


async def _echo(args: list[str], terminal: Terminal) -> int:
    await terminal.stdout((" ".join(args) + "\n").encode())
    return 0


async def _echo_stderr(args: list[str], terminal: Terminal) -> int:
    await terminal.stderr((" ".join(args) + "\n").encode())
    return 0


async def _cat(args: list[str], terminal: Terminal) -> int:
    while (chunk := await terminal.stdin.get()) is not None:
        await terminal.stdout(chunk)
    return 0


async def _whoami(args: list[str], terminal: Terminal) -> int:
    await terminal.stdout(f"{terminal.user.username}\n".encode())
    return 0


async def _id(args: list[str], terminal: Terminal) -> int:
    user = terminal.user
    line = f"user={user.username} uid={user.uid} groups={','.join(user.groups)}\n"
    await terminal.stdout(line.encode())
    return 0


async def _stty(args: list[str], terminal: Terminal) -> int:
    rows, columns = terminal.size
    await terminal.stdout(f"{rows} {columns}\n".encode())
    return 0


async def _sleep(args: list[str], terminal: Terminal) -> int:
    await asyncio.sleep(min(float(args[0]) if args else 0.0, 30.0))
    return 0


async def _exit(args: list[str], terminal: Terminal) -> int:
    return int(args[0]) if args and args[0].isdigit() else 0


_PROGRAMS: dict[str, Callable[[list[str], Terminal], Awaitable[int]]] = {
    "echo": _echo,
    "echo-stderr": _echo_stderr,
    "cat": _cat,
    "whoami": _whoami,
    "id": _id,
    "stty": _stty,
    "sleep": _sleep,
    "exit": _exit,
}
