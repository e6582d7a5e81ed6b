"""The runnable parts of ``docs/federation.md``, read in the order they are written.

The guide marks what the test does with each block by an HTML comment on the line
before it, invisible on the rendered page:

- ``<!-- run -->`` before a ``sh`` block: run it with bash in the guide's working
  directory; ``<!-- run retry -->`` runs it again until it succeeds, for a change
  that kproxy applies within seconds.
- ``<!-- file NAME -->`` before a block: the reader saves it as NAME.
- ``<!-- apply-rbac NAME -->`` before a ``kubectl apply -f NAME`` block: the API
  server stand-in serves no RBAC API, so NAME's objects are given to it instead.
- ``<!-- config-excerpt -->`` before a ``yaml`` block: additions to kproxy's
  configuration, checked against the configuration the federation runs with.
- ``<!-- kubelet NAME -->``, alone: the kubelet mounts the projected token volume
  that file NAME describes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, cast

GUIDE: Final = Path(__file__).resolve().parents[2] / "docs" / "federation.md"

Kind = Literal["run", "file", "apply-rbac", "config-excerpt", "kubelet"]
KINDS: Final = ("run", "file", "apply-rbac", "config-excerpt", "kubelet")
_MARKER: Final = re.compile(r"^<!-- (?P<kind>[a-z-]+)(?: (?P<argument>[^ ]+))? -->$")
_FENCE: Final = re.compile(r"^```(?P<language>\w*)$")


@dataclass(frozen=True, slots=True)
class Step:
    """One marked part of the guide; ``line`` is where its marker is, from 1."""

    kind: Kind
    argument: str
    language: str
    body: str
    line: int


@dataclass(frozen=True, slots=True)
class Block:
    """A fenced block of the guide, marked or not."""

    language: str
    body: str
    line: int
    marked: bool


def read_guide(text: str) -> tuple[list[Step], list[Block]]:
    """The guide's marked steps and all of its fenced blocks, in order.

    Raises ``ValueError`` for a marker the test does not know or one that is not
    followed by the block it needs, so a typo cannot silently skip a command.
    """
    lines = text.splitlines()
    steps: list[Step] = []
    blocks: list[Block] = []
    pending: tuple[str, str, int] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if marker := _MARKER.match(line):
            kind, argument = marker["kind"], marker["argument"] or ""
            if kind not in KINDS:
                raise ValueError(f"line {index + 1}: unknown marker {kind!r}")
            if kind == "kubelet":
                steps.append(Step("kubelet", argument, "", "", index + 1))
            else:
                pending = (kind, argument, index + 1)
            index += 1
            continue
        if fence := _FENCE.match(line):
            end = lines.index("```", index + 1)
            body = "\n".join(lines[index + 1 : end]) + "\n"
            blocks.append(
                Block(fence["language"], body, index + 1, pending is not None)
            )
            if pending is not None:
                kind, argument, marker_line = pending
                steps.append(
                    Step(
                        cast(Kind, kind), argument, fence["language"], body, marker_line
                    )
                )
                pending = None
            index = end + 1
            continue
        if pending is not None and line.strip():
            raise ValueError(f"line {pending[2]}: the marker is not before a block")
        index += 1
    return steps, blocks
