"""EventBridge event patterns: enough of the matching rules for the template's rules to work locally.

Supported: exact values, nested objects, `prefix`, `suffix`, `anything-but`, `exists`,
`equals-ignore-case` and `numeric`. An operator this module does not know never matches, so a rule that
uses it stays silent locally rather than firing on the wrong events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """True when every field of the pattern matches the event (fields are ANDed, values ORed)."""
    for key, expected in pattern.items():
        value = event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(expected, Mapping):
            if not isinstance(value, Mapping) or not matches(expected, value):
                return False
        elif isinstance(expected, list):
            if not any(_matches_value(rule, value) for rule in expected):
                return False
        elif not _matches_value(expected, value):
            return False
    return True


def _matches_value(rule: Any, value: Any) -> bool:
    if isinstance(rule, Mapping):
        return _matches_operator(rule, value)
    if value is _MISSING:
        return False
    if isinstance(value, list):  # a rule value matches an array that contains it
        return rule in value
    return bool(rule == value)


def _matches_operator(rule: Mapping[str, Any], value: Any) -> bool:
    if len(rule) != 1:
        return False
    ((operator, argument),) = rule.items()
    if operator == "exists":
        return (value is not _MISSING) == bool(argument)
    if value is _MISSING:
        return False
    values = value if isinstance(value, list) else [value]
    if operator == "prefix":
        return any(isinstance(v, str) and v.startswith(str(argument)) for v in values)
    if operator == "suffix":
        return any(isinstance(v, str) and v.endswith(str(argument)) for v in values)
    if operator == "equals-ignore-case":
        return any(isinstance(v, str) and v.lower() == str(argument).lower() for v in values)
    if operator == "anything-but":
        excluded = argument if isinstance(argument, list) else [argument]
        if isinstance(argument, Mapping):
            return not any(_matches_operator(argument, v) for v in values)
        return all(v not in excluded for v in values)
    if operator == "numeric":
        return any(_numeric(argument, v) for v in values)
    return False


def _numeric(conditions: list[Any], value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    checks = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        "=": lambda a, b: a == b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    pairs = list(zip(conditions[::2], conditions[1::2], strict=False))
    return bool(pairs) and all(op in checks and checks[op](value, float(bound)) for op, bound in pairs)
