"""Paged, sorted, filtered lists that cost about `limit` reads however large the table grows.

Each listed record is written as a main item plus one small *index row* per list partition it
belongs to: its owner's partition and the all-projects partition, each combined with every subset
of the filterable fields (for tasks: status and type). Every index row carries one sort attribute
per sort key, each ending in created_at and id so that ties break the way the contract says. One
global secondary index per sort key (partition `list_pk`, sort `sk_<key>`) then answers any list
request with a single Query on one partition, in either direction, starting after the marker.
See docs/decisions.md ("List indexes").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from itertools import combinations

from pydantic import BaseModel, ConfigDict

from imagetasks.domain.errors import InvalidRequest

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
UUID_LIKE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
# Sorts after every digit and letter: records without a value come last in ascending order
# and first in descending order, as NULLs do in PostgreSQL.
MISSING = "~"


class SortDir(StrEnum):
    ASC = "asc"
    DESC = "desc"


class ListSpec(BaseModel):
    """What can be listed for one kind of record."""

    model_config = ConfigDict(frozen=True)

    sort_keys: tuple[str, ...]
    default_sort_key: str
    filters: tuple[str, ...]  # fields that get their own partitions, in a fixed order

    def index_name(self, sort_key: str) -> str:
        return f"by_{sort_key}"

    def partition(self, owner: str | None, filters: Mapping[str, str]) -> tuple[str, str]:
        """(row kind, partition key) for a scope (an owner, or None for all projects) and filters."""
        kind = "p" if owner is not None else "a"
        key = f"p#{owner}" if owner is not None else "a"
        for name in self.filters:
            if name in filters:
                kind += f".{name}"
                key += f"#{name}#{filters[name]}"
        return kind, key

    def partitions_of(self, owner: str, values: Mapping[str, str]) -> dict[str, str]:
        """Every (row kind → partition key) a record with these field values belongs to."""
        result: dict[str, str] = {}
        for scope in (owner, None):
            for size in range(len(self.filters) + 1):
                for chosen in combinations(self.filters, size):
                    kind, key = self.partition(scope, {name: values[name] for name in chosen})
                    result[kind] = key
        return result


class ListRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: int = DEFAULT_LIMIT
    marker: str | None = None
    sort_key: str
    sort_dir: SortDir = SortDir.DESC
    filters: dict[str, str] = {}
    owner: str | None = None  # only honoured for admins
    record_id: str | None = None  # Glance's `id` filter: that one record, if it matches the rest


def parse_list_request(
    params: Mapping[str, str],
    spec: ListSpec,
    allowed_values: Mapping[str, Iterable[str]],
    repeated: Mapping[str, Sequence[str]] | None = None,
) -> ListRequest:
    """Validate query parameters with Glance's messages (each problem is a 400). `repeated` holds
    every value of each parameter, as API Gateway passes them: a task list reads one index, so a
    second, different `sort_key` or `sort_dir` is refused rather than dropped."""
    for name in ("sort_key", "sort_dir"):
        values = set((repeated or {}).get(name) or ())
        if len(values) > 1:
            raise InvalidRequest(f"Tasks are sorted by one key in one direction: give one {name}.")
    limit = DEFAULT_LIMIT
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise InvalidRequest("limit param must be an integer") from None
        if limit < 0:
            raise InvalidRequest("limit param must be positive")
        limit = min(limit, MAX_LIMIT)
    marker = params.get("marker")
    if marker is not None and not UUID_LIKE.match(marker):
        raise InvalidRequest("Invalid marker format")
    sort_dir = params.get("sort_dir", SortDir.DESC.value)
    if sort_dir not in (SortDir.ASC.value, SortDir.DESC.value):
        raise InvalidRequest(f"Invalid sort direction: {sort_dir}")
    sort_key = params.get("sort_key", spec.default_sort_key)
    if sort_key not in spec.sort_keys:
        raise InvalidRequest("Sort key supplied was not valid.")
    filters: dict[str, str] = {}
    for name in spec.filters:
        if name in params:
            value = params[name]
            if value not in set(allowed_values.get(name, ())):
                raise InvalidRequest(f"Invalid {name} value: {value}")
            filters[name] = value
    return ListRequest(
        limit=limit,
        marker=marker,
        sort_key=sort_key,
        sort_dir=SortDir(sort_dir),
        filters=filters,
        owner=params.get("owner") or None,
        record_id=params.get("id"),
    )
