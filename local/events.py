"""EventBridge event patterns, matched by moto's own matcher: the one its EventBridge applies to rules
made through its API (exact values, nested objects, `prefix`, `suffix`, `anything-but`, `exists`,
`equals-ignore-case`, `numeric`, `cidr`, `wildcard`, `$or`). The local stack delivers to the
template's rules itself only because moto's EventBridge has no Lambda target (local/stack.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moto.events.models import EventPattern


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """True when every field of the pattern matches the event (fields are ANDed, values ORed)."""
    # moto types the event as its own TypedDict of what PutEvents carries; any mapping is read alike.
    return EventPattern(None, dict(pattern)).matches_event(dict(event))  # type: ignore[arg-type]
