"""CEL expressions in claim mappings and validation rules, compiled once.

kube-apiserver lets an operator compute the username, groups, uid and extra values, and
write extra checks, as CEL expressions over the verified ``claims`` (and, for user
validation rules, over the mapped ``user``). kproxy reads the same expressions, so the
same file works for both.

Two CEL implementations install on Python 3.11. ``common-expression-language``
(module ``cel``, a Rust core) was chosen over ``cel-python`` (module ``celpy``, pure
Python): on the expressions of the API server's documentation both gave the same
answers, and ``cel`` evaluates a compiled program in about 0.4 microseconds once the
token's activation is built (about 15 microseconds per token), where ``celpy`` takes
180 to 600 microseconds per expression. Neither ships Kubernetes' string library, so
the few string functions operators use in mappings (``split``, ``lowerAscii``, ...) are
provided here.

Every expression is compiled when the configuration is loaded: a syntax error is a
configuration error with its file and line, never a failure at request time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import cel
from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema


class EvaluationError(Exception):
    """An expression failed at evaluation time or produced the wrong type."""


def _split(text: str, separator: str) -> list[str]:
    return text.split(separator)


def _join(items: list[str], separator: str = "") -> str:
    return separator.join(items)


def _lower_ascii(text: str) -> str:
    return text.lower() if text.isascii() else _ascii_only(text, str.lower)


def _upper_ascii(text: str) -> str:
    return text.upper() if text.isascii() else _ascii_only(text, str.upper)


def _ascii_only(text: str, change: Callable[[str], str]) -> str:
    # Kubernetes' lowerAscii and upperAscii leave non-ASCII letters alone.
    return "".join(change(c) if c.isascii() else c for c in text)


def _trim(text: str) -> str:
    return text.strip()


def _replace(text: str, old: str, new: str) -> str:
    return text.replace(old, new)


# The part of Kubernetes' CEL string library that claim mappings use.
STRING_FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = {
    "split": _split,
    "join": _join,
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "trim": _trim,
    "replace": _replace,
}


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled CEL expression and the source it came from."""

    source: str
    program: Any

    @classmethod
    def compile(cls, source: str) -> Expression:
        """Compile ``source``; raise ``ValueError`` with CEL's message if it is bad."""
        if not source.strip():
            raise ValueError("expression is empty")
        try:
            program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(_compile_message(exc)) from exc
        return cls(source=source, program=program)

    def evaluate(self, activation: Any) -> Any:
        """Run against an activation from ``activation_for``.

        Raises ``EvaluationError`` for a missing claim, a type mismatch or any other
        failure the expression meets: each is a rejection of the token.
        """
        try:
            return self.program.execute(activation)
        # The Rust core raises KeyError, TypeError, RuntimeError and more.
        except Exception as exc:
            raise EvaluationError(f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            _compile_for_schema,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda expression: expression.source
            ),
        )


def _compile_for_schema(source: str) -> Expression:
    try:
        return Expression.compile(source)
    except ValueError as exc:
        raise PydanticCustomError(
            "cel", "invalid CEL expression: {problem}", {"problem": str(exc)}
        ) from exc


def _compile_message(exc: Exception) -> str:
    text = str(exc)
    # "Failed to parse expression '...': ERROR: <input>:2:6: Syntax error: ..."
    # The expression itself is in the file already; keep the position and reason.
    marker = text.find("<input>:")
    if marker >= 0:
        text = "at " + text[marker + len("<input>:") :]
    return " ".join(text.split())


def activation_for(name: str, value: Mapping[str, Any]) -> Any:
    """Build the activation once per token; every expression then reuses it."""
    return cel.Context({name: dict(value)}, functions=dict(STRING_FUNCTIONS))


def as_string(value: Any, *, what: str) -> str:
    """Require a string result, as the API server does for username and uid."""
    if not isinstance(value, str):
        raise EvaluationError(f"{what} expression must return a string")
    return value


def as_string_list(value: Any, *, what: str) -> tuple[str, ...]:
    """Accept a string or a list of strings; empty values mean "not present"."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v for v in value if v)
    raise EvaluationError(
        f"{what} expression must return a string or a list of strings"
    )


def as_bool(value: Any, *, what: str) -> bool:
    if not isinstance(value, bool):
        raise EvaluationError(f"{what} expression must return a boolean")
    return value


_STRING_LITERAL: Final = re.compile(
    r"""[rRbB]*('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""",
    re.DOTALL,
)


def selects_claim(expression: Expression, claim: str) -> bool:
    """Tell whether the expression reads ``claims.<claim>`` (or ``claims.?<claim>``).

    The API server walks the expression's syntax tree for this; the Rust core exposes
    no tree, so string literals are blanked out first and the selection is matched on
    what remains. Like the API server, an index such as ``claims["email"]`` is not
    counted.
    """
    code = _STRING_LITERAL.sub("''", expression.source)
    pattern = rf"\bclaims\s*\.\s*\??\s*{re.escape(claim)}(?![A-Za-z0-9_])"
    return re.search(pattern, code) is not None
