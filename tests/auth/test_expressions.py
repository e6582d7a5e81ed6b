"""CEL as claim mappings use it: compiled once, Kubernetes' string functions, types."""

from __future__ import annotations

import pytest

from kproxy.auth.expressions import (
    EvaluationError,
    Expression,
    activation_for,
    as_string_list,
    selects_claim,
)

CLAIMS = {"sub": "42", "email": "Ada@Example.edu", "roles": "a,b", "groups": ["x", ""]}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("claims.roles.split(',')", ["a", "b"], id="split"),
        pytest.param("claims.email.lowerAscii()", "ada@example.edu", id="lowerAscii"),
        pytest.param("claims.email.upperAscii()", "ADA@EXAMPLE.EDU", id="upperAscii"),
        pytest.param("'  x '.trim()", "x", id="trim"),
        pytest.param("['a', 'b'].join('-')", "a-b", id="join"),
        pytest.param("claims.sub.replace('4', 'four')", "four2", id="replace"),
        pytest.param("has(claims.missing) ? claims.missing : 'none'", "none", id="has"),
        pytest.param("claims.groups.filter(g, g != '')", ["x"], id="filter"),
    ],
)
def test_expressions_from_the_api_server_docs_evaluate(
    source: str, expected: object
) -> None:
    expression = Expression.compile(source)

    assert expression.evaluate(activation_for("claims", CLAIMS)) == expected


@pytest.mark.parametrize(
    "source", ["claims.sub +", "", "a b", "claims.sub.startsWith("]
)
def test_syntax_errors_are_found_at_compile_time(source: str) -> None:
    with pytest.raises(ValueError, match=r"empty|at \d+:\d+"):
        Expression.compile(source)


@pytest.mark.parametrize(
    "source", ["claims.missing", "claims.sub + 1", "1 / 0", "claims.nope.split(',')"]
)
def test_evaluation_failures_are_evaluation_errors(source: str) -> None:
    with pytest.raises(EvaluationError):
        Expression.compile(source).evaluate(activation_for("claims", CLAIMS))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", (), id="empty-string-is-absent"),
        pytest.param(None, (), id="null-is-absent"),
        pytest.param(["a", "", "b"], ("a", "b"), id="empty-items-dropped"),
        pytest.param("a", ("a",), id="single-string"),
    ],
)
def test_string_list_results_follow_the_api_server(
    value: object, expected: tuple[str, ...]
) -> None:
    assert as_string_list(value, what="groups") == expected


@pytest.mark.parametrize("value", [[1], 3, {"a": "b"}])
def test_other_results_are_not_string_lists(value: object) -> None:
    with pytest.raises(EvaluationError):
        as_string_list(value, what="groups")


@pytest.mark.parametrize(
    ("source", "claim", "expected"),
    [
        pytest.param("claims.email", "email", True, id="select"),
        pytest.param("claims.?email.orValue('')", "email", True, id="optional-select"),
        pytest.param("claims.email_verified", "email", False, id="longer-name"),
        pytest.param("'claims.email'", "email", False, id="inside-a-string"),
        pytest.param("claims['email']", "email", False, id="index-not-counted"),
        pytest.param("claims.email_verified == true", "email_verified", True, id="ev"),
    ],
)
def test_claim_selection_is_detected_as_the_api_server_detects_it(
    source: str, claim: str, expected: bool
) -> None:
    expression = Expression(source=source, program=None)

    assert selects_claim(expression, claim) is expected
