"""Reading YAML files so that every problem can name its file, line and field.

Operators and university admins write kproxy's files by hand, so an error must point at
the place to fix. PyYAML's composer keeps the position of every node; this module keeps
those positions beside the plain values, then validates the values with a pydantic
model and translates each validation error's location back into a line.

A YAML mapping with the same key twice is refused: PyYAML would silently keep the last
one, and in a policy file that could quietly widen what a university may do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from kproxy.errors import ConfigError, ConfigProblem

T = TypeVar("T")

Location = tuple[str | int, ...]


class Model(BaseModel):
    """Base of every file schema: camelCase keys, unknown keys refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


@dataclass(frozen=True, slots=True)
class Document:
    """The plain values of one YAML file and the line of each of its nodes."""

    path: str
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)

    def line_of(self, location: Location) -> int | None:
        """Return the line of ``location``, or of its nearest enclosing node."""
        for end in range(len(location), -1, -1):
            line = self.lines.get(location[:end])
            if line is not None:
                return line
        return None

    def problem(self, location: Location, message: str) -> ConfigProblem:
        return ConfigProblem(
            file=self.path,
            line=self.line_of(location),
            field=field_path(location),
            message=message,
        )


def field_path(location: Location) -> str:
    """Spell a location as an operator would: ``jwt[0].issuer.url``."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def load_document(path: str | Path) -> Document:
    """Read and parse one YAML file; raise ``ConfigError`` when it is not YAML."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single(name, f"cannot read file: {exc}") from exc
    return parse_document(text, name)


def parse_document(text: str, name: str) -> Document:
    """Parse YAML ``text`` that came from ``name``."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError.single(
            name, f"invalid YAML: {exc.problem}", line=line
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError.single(name, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()

    lines: dict[Location, int] = {}
    problems: list[ConfigProblem] = []
    if node is not None:
        for location, line, duplicate in _walk(node, ()):
            if duplicate:
                message = f"key {location[-1]!r} appears more than once"
                problems.append(
                    ConfigProblem(name, line, field_path(location), message)
                )
            lines.setdefault(location, line)
    if problems:
        raise ConfigError(problems)
    return Document(path=name, data=data, lines=lines)


# libyaml's loader keeps node marks as the pure-Python one does, and reads a
# hundred policy files in a fraction of the time.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _walk(
    node: yaml.Node, location: Location, line: int | None = None
) -> Iterator[tuple[Location, int, bool]]:
    # A mapping's value is placed on its key's line: a block mapping's own node starts
    # on the line of its first child, which is not where an operator looks.
    yield location, line or node.start_mark.line + 1, False
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            key_line = key_node.start_mark.line + 1
            if key in seen:
                yield (*location, key), key_line, True
                continue
            seen.add(key)
            yield from _walk(value_node, (*location, key), key_line)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _walk(item, (*location, index))


def validate(document: Document, schema: type[T], *, data: Any = None) -> T:
    """Validate the document (or ``data`` taken from it) against a schema.

    Every validation error becomes one ``ConfigProblem``, so an operator sees all of
    them at once rather than fixing the file one complaint at a time.
    """
    value = document.data if data is None else data
    try:
        return TypeAdapter(schema).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(
            [_problem(document, error) for error in exc.errors(include_url=False)]
        ) from exc


def validate_section(document: Document, key: str, schema: type[T]) -> T | None:
    """Validate one top-level section of the document, or return None if absent."""
    if not isinstance(document.data, dict) or key not in document.data:
        return None
    try:
        return TypeAdapter(schema).validate_python(document.data[key])
    except ValidationError as exc:
        raise ConfigError(
            [
                _problem(document, error, within=(key,))
                for error in exc.errors(include_url=False)
            ]
        ) from exc


def _problem(document: Document, error: Any, within: Location = ()) -> ConfigProblem:
    location: Location = within + tuple(
        part for part in error["loc"] if not _is_pydantic_tag(part)
    )
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "missing":
        message = "required field is missing"
    return document.problem(location, message[:1].lower() + message[1:])


def _is_pydantic_tag(part: str | int) -> bool:
    # Unions and validators add their own names to an error's location
    # ("function-after[...]", "list[str]"); they are not keys the operator wrote.
    return isinstance(part, str) and ("[" in part or "-" in part)
