"""The task console: one self-contained page (console.html) served at GET /console.

The page signs in with a token the user pastes, keeps it in the tab's session storage and calls the
API of its own origin and stage; it shows the project's tasks (following running ones with
`?wait=20` long polls) and images, cancels, and says why a task failed: the task's own `message`,
under a title and a hint of what to do for its `error_code` (HINTS, one per documented code).

Its Content-Security-Policy allows exactly the page's one inline script and one inline style (by
their SHA-256) and connections to its own origin; nothing else loads (docs/decisions.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PAGE = Path(__file__).parent / "console.html"
HINTS_PLACEHOLDER = "__ERROR_HINTS__"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_INLINE_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)

#: error_code → (a title, what the task's owner can do about it). The message says what happened.
HINTS: dict[str, tuple[str, str]] = {
    "invalid_input": (
        "Invalid input",
        "Correct the task's input as the message says, then create the task again.",
    ),
    "source_unavailable": (
        "Source unavailable",
        "Check that the address (or upload) is reachable from the service and still there, then try again.",
    ),
    "source_too_slow": (
        "Source too slow",
        "The source sent data slower than this cloud accepts: try a faster or nearer source, or later.",
    ),
    "image_rejected": (
        "Image rejected",
        "The data failed an image check: check the declared disk_format and the image file itself.",
    ),
    "checksum_mismatch": (
        "Checksum mismatch",
        "The data is not what the given checksum says: check the checksum, or the source for damage.",
    ),
    "too_large": (
        "Too large",
        "The image is over this cloud's limits: use a smaller image, or ask the operator.",
    ),
    "image_unavailable": (
        "Image unavailable",
        "The image this task works on was deleted or is not active: choose another image.",
    ),
    "timeout": (
        "Timed out",
        "A processing step ran longer than this cloud allows: try again, or a smaller image.",
    ),
    "busy": (
        "Service busy",
        "No processing slot became free in time: try again when fewer tasks are running.",
    ),
    "cancelled": ("Cancelled", "Nothing was kept: create the task again if it is still needed."),
    "service_unavailable": (
        "Service unavailable",
        "A service the task needs kept failing for a while: try again later.",
    ),
    "internal": (
        "Internal error",
        "The service failed on its side: try again later, and give the operator the task id if it persists.",
    ),
}


@dataclass(frozen=True)
class ConsolePage:
    html: str
    headers: dict[str, str]


def _sha256_source(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def _hints_json() -> str:
    hints = {code: {"title": title, "hint": hint} for code, (title, hint) in HINTS.items()}
    # Inside a <script> element: no "</" can end it early, whatever the text says.
    return json.dumps(hints, ensure_ascii=True).replace("<", "\\u003c")


def content_security_policy(html: str) -> str:
    scripts = _INLINE_SCRIPT.findall(html)
    styles = _INLINE_STYLE.findall(html)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(_sha256_source(script) for script in scripts),
            "style-src " + " ".join(_sha256_source(style) for style in styles),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@lru_cache(maxsize=1)
def page() -> ConsolePage:
    """The page with the hints in place, and the headers it is served with."""
    html = PAGE.read_text(encoding="utf-8").replace(HINTS_PLACEHOLDER, _hints_json())
    return ConsolePage(
        html=html,
        headers={
            "Content-Security-Policy": content_security_policy(html),
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
