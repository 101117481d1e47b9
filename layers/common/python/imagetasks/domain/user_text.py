"""Text a user gives (names, tags, property keys and values, URIs) checked at the edge: what is not
valid Unicode text (a lone surrogate, which no UTF-8 store can hold) or holds control characters is
refused with a 400 naming the field, before anything is stored or any work starts."""

from __future__ import annotations

import re

from imagetasks.domain.errors import InvalidRequest

# C0 and C1 control characters, DEL, and UTF-16 surrogate halves (only lone ones reach a str).
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Free text (a property value) may hold tabs and line breaks; nothing else of the above.
_FORBIDDEN_IN_FREE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

#: Glance's columns hold 32-bit signed integers: the largest min_disk / min_ram (and what filters
#: of integer fields compare with) it stores.
MAX_INT32 = 2**31 - 1
#: The largest size a filter or a value can name: a signed 64-bit byte count (8 EiB).
MAX_INT64 = 2**63 - 1


def check_text(field: str, value: str, *, free_text: bool = False) -> None:
    """InvalidRequest naming `field` when `value` holds a lone surrogate or a control character
    (`free_text`: tabs and line breaks are allowed)."""
    found = (_FORBIDDEN_IN_FREE_TEXT if free_text else _FORBIDDEN).search(value)
    if found is None:
        return
    char = found.group()
    position = found.start()
    if "\ud800" <= char <= "\udfff":
        raise InvalidRequest(
            f"Invalid value for {field}: it holds a lone surrogate (U+{ord(char):04X} at character "
            f"{position}), which is not valid Unicode text"
        )
    raise InvalidRequest(
        f"Invalid value for {field}: it holds a control character (U+{ord(char):04X} at character "
        f"{position}); remove it"
    )


def shown(value: str, limit: int = 80) -> str:
    """`value` safe to put in a message: escaped (no control characters, no lone surrogates), short."""
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    text = repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."
