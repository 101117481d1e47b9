"""IAM's evaluation of identity-based policies, for the local stack's enforcement (`local/iam.py`).

moto's evaluator (`moto.iam.access_control`) matches actions case-sensitively, ignores
`NotResource`, and turns an Allow statement whose Condition does not hold into an explicit deny
(a statement that does not apply must leave the decision to the others). This one follows AWS's
documented logic for a single account's identity policies, without permissions boundaries, SCPs,
session policies or resource policies (the template has none the local stack evaluates):

- an explicit Deny in any statement that applies wins; otherwise any Allow that applies allows;
  otherwise the request is implicitly denied;
- a statement applies when its `Action` (or anything outside its `NotAction`) matches the action,
  its `Resource` (or anything outside its `NotResource`) matches the resource, and every condition
  of its `Condition` block holds;
- actions match case-insensitively, resources case-sensitively, both with `*` and `?` wildcards;
- in a `Condition` block, operators are ANDed, keys within an operator are ANDed, the values of a
  key are ORed; a key absent from the request fails the condition (but `...IfExists` holds,
  `Null` tests presence, and negated operators hold when the key is absent);
- multivalued keys take `ForAnyValue:` / `ForAllValues:` (the latter holds on an absent key).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

Context = Mapping[str, str | Sequence[str]]


class Decision(Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit deny"
    IMPLICIT_DENY = "implicit deny"


def glob_match(pattern: str, value: str, *, ignore_case: bool = False) -> re.Match[str] | None:
    """IAM's wildcards: `*` any run of characters, `?` exactly one; everything else literal.
    (moto turns `*` into `.*` and leaves the rest as a regular expression, so `?` and `.` go wrong.)"""
    return _compiled_glob(pattern, ignore_case).fullmatch(value)


@functools.lru_cache(maxsize=4096)
def _compiled_glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # Every AWS call of a handler is checked against its role's statements: the same few hundred
    # patterns, translated and compiled once instead of at each call.
    expression = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(expression, flags=re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _arn_like(actual: str, expected: str) -> bool:
    """ArnLike/ArnEquals: each of the six colon-separated parts matched on its own, with wildcards."""
    actual_parts, expected_parts = actual.split(":", 5), expected.split(":", 5)
    if len(actual_parts) != 6 or len(expected_parts) != 6:
        return False
    return all(glob_match(e, a) for a, e in zip(actual_parts, expected_parts, strict=True))


def _numeric(operator: str, actual: str, expected: str) -> bool:
    try:
        a, e = float(actual), float(expected)
    except ValueError:
        return False
    return {
        "NumericEquals": a == e,
        "NumericLessThan": a < e,
        "NumericLessThanEquals": a <= e,
        "NumericGreaterThan": a > e,
        "NumericGreaterThanEquals": a >= e,
    }[operator]


_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}


def _value_matches(operator: str, actual: str, expected: Any) -> bool:
    value = str(expected)
    if operator in ("Bool", "StringEqualsIgnoreCase"):
        return actual.lower() == value.lower()
    if operator == "StringEquals":
        return actual == value
    if operator == "StringLike":
        return glob_match(value, actual) is not None
    if operator in ("ArnLike", "ArnEquals"):
        return _arn_like(actual, value)
    if operator.startswith("Numeric"):
        return _numeric(operator, actual, value)
    raise ValueError(operator)


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, Any]) -> bool:
    """One key of one operator (`expected`: one value or a list, ORed)."""
    qualifier = ""
    if ":" in operator and operator.split(":", 1)[0] in ("ForAnyValue", "ForAllValues"):
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    present = key.lower() in context
    expected_values = _as_list(expected)
    if operator == "Null":  # true: the key must be absent; false: present
        return present != (str(expected_values[0]).lower() == "true")
    negated = operator in _NEGATED
    if not present:  # a missing key: ...IfExists, ForAllValues and negated operators hold
        return if_exists or qualifier == "ForAllValues" or negated
    actual_values = [str(v) for v in _as_list(context[key.lower()])]
    base = _NEGATED.get(operator, operator)

    def one(actual: str) -> bool:
        matched = any(_value_matches(base, actual, value) for value in expected_values)
        return not matched if negated else matched

    if qualifier == "ForAllValues":
        return all(one(actual) for actual in actual_values)
    return any(one(actual) for actual in actual_values)


def conditions_hold(block: Mapping[str, Mapping[str, Any]] | None, context: Context) -> bool:
    if not block:
        return True
    lowered = {str(k).lower(): v for k, v in context.items()}
    return all(
        _condition_holds(operator, key, expected, lowered)
        for operator, keys in block.items()
        for key, expected in keys.items()
    )


def _in_scope(statement: Mapping[str, Any], element: str, value: str, *, ignore_case: bool) -> bool:
    """Whether the statement's `Action` (`Resource`) matches the value, or its `NotAction`
    (`NotResource`) does not."""
    negated = f"Not{element}" in statement
    patterns = _as_list(statement[f"Not{element}"] if negated else statement.get(element, []))
    return any(glob_match(str(pattern), value, ignore_case=ignore_case) for pattern in patterns) != negated


def statement_applies(statement: Mapping[str, Any], action: str, resource: str, context: Context) -> bool:
    return (
        _in_scope(statement, "Action", action, ignore_case=True)
        and _in_scope(statement, "Resource", resource, ignore_case=False)
        and conditions_hold(statement.get("Condition"), context)
    )


def evaluate(
    policies: Iterable[Mapping[str, Any] | str], action: str, resource: str, context: Context | None = None
) -> Decision:
    """The decision of a principal's identity policies (documents or their JSON) on one request."""
    allowed = False
    for policy in policies:
        document = json.loads(policy) if isinstance(policy, str) else policy
        for statement in _as_list(document.get("Statement", [])):
            if not statement_applies(statement, action, resource, context or {}):
                continue
            if statement.get("Effect") == "Deny":
                return Decision.EXPLICIT_DENY
            if statement.get("Effect") == "Allow":
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY
