"""docs/decisions.md: its index lists every entry, numbered in order, dated, with a link that resolves."""

from __future__ import annotations

import re

from tests.support import ROOT

DECISIONS = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
ENTRY = re.compile(r"^### (\d+)\. (.+)\n\*(\d{4}-\d{2}-\d{2})\.\*", re.M)
INDEX_ROW = re.compile(r"^\| (\d+) \| (\d{4}-\d{2}-\d{2}) \| [^|]+ \| \[(.+)\]\(#([^)]+)\) \|$", re.M)


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_entries_are_numbered_in_order_and_dated() -> None:
    numbers = [int(number) for number, _, _ in ENTRY.findall(DECISIONS)]

    assert numbers, "no '### N. title' entries"
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(re.findall(r"^### ", DECISIONS, re.M)) == len(numbers), "an entry without number or date"


def test_the_index_lists_every_entry_with_its_date_and_a_working_link() -> None:
    entries = {int(n): (title, date) for n, title, date in ENTRY.findall(DECISIONS)}
    rows = INDEX_ROW.findall(DECISIONS)

    assert [int(n) for n, *_ in rows] == sorted(entries)
    for number, date, title, link in rows:
        heading_title, heading_date = entries[int(number)]
        assert title.replace("\\|", "|") == heading_title
        assert date == heading_date
        assert link == anchor(f"{number}. {heading_title}")
