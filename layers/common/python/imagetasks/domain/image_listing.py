"""Image lists with Glance's filters, each answered by one Query per partition it reads.

An image is stored as its main item plus *index rows*, one per partition it belongs to (see
docs/decisions.md, "Image list filters"). A partition is a *scope* — its owner's images (`p#<owner>`),
every image (`a`, for admins), public images (`v#public`) or community images (`v#community`) —
optionally narrowed by *one* equality value: `name`, `disk_format`, `container_format`, `status`,
`visibility`, one of its tags, or one extra property `key=value`. Hidden images (`os_hidden`) live in
partitions of their own (suffix `#hidden`), so the default list leaves them out without reading them.

A request reads 1 to 3 scopes (a member's default list is its own images merged with public ones) times
the values of an `in:` list, each one Query of about `limit` rows, merged in sort order. Range filters
on the sort key (`size_min`/`size_max` sorted by size, `created_at`/`updated_at` operators sorted by
that field) are key conditions. Everything else — a second equality filter, a range on another field,
`protected`, another member's `owner` — is a *residual* condition: a DynamoDB filter expression,
which reads rows it then drops (counted in tests/integration/adapters/test_image_list_filters.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from imagetasks.auth.identity import Caller
from imagetasks.domain import clock
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.listing import DEFAULT_LIMIT, MAX_LIMIT, UUID_LIKE, SortDir
from imagetasks.domain.user_text import MAX_INT64

SORT_KEYS = ("created_at", "updated_at", "name", "size", "id")
DEFAULT_SORT_KEY = "created_at"
VISIBILITIES = ("public", "private", "shared", "community")
LISTED_SCOPES = ("public", "community")  # visibilities with a scope of their own
# Equality filters with partitions of their own (the others of a request become residual
# conditions). `checksum` (md5) and `os_hash_value` (sha512) name one image's data: Glance compares
# them exactly, and they are the most selective filter a request can carry.
DIMENSIONS = ("name", "disk_format", "container_format", "status", "visibility", "checksum", "os_hash_value")
HASH_FILTERS = ("checksum", "os_hash_value")
IN_FILTERS = ("name", "disk_format", "container_format", "status")  # Glance's `in:` fields (id aside)
TIME_FILTERS = ("created_at", "updated_at")
TIME_OPERATORS = ("gt", "gte", "lt", "lte", "eq", "neq")
# Query parameters that are not property filters.
RESERVED = frozenset(
    {
        "limit", "marker", "sort_key", "sort_dir", "sort", "owner", "visibility", "os_hidden", "tag",
        "size_min", "size_max", "id", "member_status", "protected", *DIMENSIONS, *TIME_FILTERS,
    }
)  # fmt: skip
MAX_IN_VALUES = 10  # values of one `in:` list: each is one more Query
MAX_IDS = 100  # `id=in:` is one BatchGetItem
MAX_INDEXED_VALUES = 20  # tags + extra properties of one image: each is a row per scope
HIDDEN = "#hidden"


def _part(value: str) -> str:
    """A value inside a partition key, escaped so `#` in a name or property cannot fake another key."""
    return quote(value, safe="")


def scope_key(scope: str, hidden: bool) -> str:
    return scope + (HIDDEN if hidden else "")


#: DynamoDB keys are at most 2048 bytes (a partition key, the table's and the index's); an index row's
#: id is `<image id>#<partition>`, so a partition may take 2048 - 37 bytes. One that would be
#: longer (a long property value, a name or tag of many-byte characters once percent-encoded) is
#: stored under its digest instead: it still names exactly one value, and keys that fit are unchanged.
MAX_PARTITION_BYTES = 2048 - 37
#: A property value longer than this is carried by index rows as its digest (rows are written in one
#: transaction: at most 4 MB, 400 KB each), and compared so by list filters.
MAX_INDEXED_VALUE_BYTES = 1024
#: DynamoDB sort keys are at most 1024 bytes: a name sorts by its first NAME_SORT_BYTES bytes.
NAME_SORT_BYTES = 900


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def partition_key(scope: str, hidden: bool, dimension: tuple[str, str] | None) -> str:
    """`scope[#dimension#value][#hidden]`; a property dimension is `prop:<key>`. A key over
    MAX_PARTITION_BYTES is `h#<sha256 of it>`."""
    key = scope
    if dimension is not None:
        key += f"#{_part(dimension[0])}#{_part(dimension[1])}"
    key += HIDDEN if hidden else ""
    if len(key.encode("utf-8")) > MAX_PARTITION_BYTES:
        return f"h#{_digest(key)}"
    return key


def indexed_value(value: str) -> str:
    """A property value as index rows carry it (and filters compare it): itself, or its digest
    when longer than MAX_INDEXED_VALUE_BYTES."""
    if len(value.encode("utf-8", "surrogatepass")) <= MAX_INDEXED_VALUE_BYTES:
        return value
    return f"#sha256:{_digest(value)}"


def name_sort_value(name: str) -> str:
    """A name as the name sort key holds it: its first NAME_SORT_BYTES bytes (whole characters)."""
    return name.encode("utf-8")[:NAME_SORT_BYTES].decode("utf-8", "ignore")


class Condition(BaseModel):
    """A residual filter on an index row's attributes (the image's own fields)."""

    model_config = ConfigDict(frozen=True)

    field: str  # a stub attribute, "tag" or "prop:<key>"
    op: Literal["eq", "in", "ne", "ge", "lt", "le", "contains", "within", "outside"]
    values: tuple[Any, ...]

    def matches(self, row: Mapping[str, Any]) -> bool:
        if self.field == "tag":
            return self.values[0] in (row.get("tags_set") or set())
        if self.field.startswith("prop:"):
            value = (row.get("props") or {}).get(self.field[5:])
        else:
            value = row.get(self.field)
        if value is None:
            return self.op == "ne"
        first, last = self.values[0], self.values[-1]
        checks: dict[str, Callable[[], bool]] = {
            "eq": lambda: value == first,
            "in": lambda: value in self.values,
            "ne": lambda: value != first,
            "ge": lambda: value >= first,
            "lt": lambda: value < first,
            "le": lambda: value <= first,
            "contains": lambda: first in value,
            "within": lambda: first <= value < last,
            "outside": lambda: not first <= value < last,
        }
        return bool(checks[self.op]())


class ImageListRequest(BaseModel):
    """A list request as the store executes it."""

    model_config = ConfigDict(frozen=True)

    limit: int
    marker: str | None
    sort_key: str
    sort_dir: SortDir
    partitions: tuple[str, ...]  # merged in sort order; empty: nothing to show
    key_range: tuple[str | None, str | None] = (None, None)  # inclusive bounds on sk_<sort_key>
    conditions: tuple[Condition, ...] = ()
    ids: tuple[str, ...] | None = None  # `id=in:`: read these images, no partition
    hidden: bool = False
    # Images shared with the caller's project: the member statuses listed (none: no shared images)
    # and the partitions of the `s` scope (see `shared_scope`) a shared image must be in to match.
    member_statuses: tuple[str, ...] = ()
    shared_partitions: tuple[str, ...] = ()


def image_partitions(
    owner: str,
    visibility: str,
    hidden: bool,
    values: Mapping[str, str | None],
    tags: tuple[str, ...],
    properties: Mapping[str, str],
    scopes: list[str] | None = None,
) -> list[str]:
    """Every partition an image with these fields has an index row in (or would have in `scopes`)."""
    if scopes is None:
        scopes = [f"p#{_part(owner)}", "a"]
        if visibility in LISTED_SCOPES:
            scopes.append(f"v#{visibility}")
    dimensions: list[tuple[str, str] | None] = [None]
    dimensions += [(name, str(values[name])) for name in DIMENSIONS if values.get(name) is not None]
    dimensions += [("tag", tag) for tag in tags]
    dimensions += [(f"prop:{key}", value) for key, value in sorted(properties.items())]
    return list(dict.fromkeys(partition_key(s, hidden, d) for s in scopes for d in dimensions))


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise InvalidRequest(f"Invalid value for {name}: {value!r}; expected true or false")


def _int(name: str, value: str) -> int:
    if len(value) > 40:
        raise InvalidRequest(f"Invalid value for {name}: {value[:40]!r}...; expected an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"Invalid value for {name}: {value!r}; expected an integer") from None
    if number < 0:
        raise InvalidRequest(f"Invalid value for {name}: {value!r}; expected a non-negative integer")
    if number > MAX_INT64:
        raise InvalidRequest(f"Invalid value for {name}: {value}; at most {MAX_INT64} (bytes)")
    return number


def _time_filter(name: str, value: str) -> tuple[str, datetime]:
    operator, _, moment = value.partition(":")
    if not moment or operator not in TIME_OPERATORS:
        raise InvalidRequest(
            f"Invalid {name} filter {value!r}: expected <operator>:<time>, one of {TIME_OPERATORS}"
        )
    try:
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"Invalid time {moment!r} in the {name} filter") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=clock.now().tzinfo)
    try:
        parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before the first UTC second
        raise InvalidRequest(f"Invalid time {moment!r} in the {name} filter: out of range") from None
    return operator, parsed.replace(microsecond=0)


def _second_after(moment: datetime) -> str:
    """The stored form of the second after `moment`; past the last one there is, a bound above
    every stored time of that second."""
    try:
        return clock.to_stored(moment + timedelta(seconds=1))
    except OverflowError:
        return clock.to_stored(moment) + "~"


def _values(name: str, raw: str) -> tuple[str, ...]:
    """`in:a,b` → (a, b); a plain value → (value,)."""
    if raw.startswith("in:"):
        if name not in IN_FILTERS:
            raise InvalidRequest(f"The 'in' operator is not supported for {name}")
        values = tuple(dict.fromkeys(v.strip() for v in raw[3:].split(",") if v.strip()))
        if not values or len(values) > MAX_IN_VALUES:
            raise InvalidRequest(f"The 'in' operator takes 1 to {MAX_IN_VALUES} values")
        return values
    return (raw,)


def _sort(params: Mapping[str, str], repeated: Mapping[str, Sequence[str]]) -> tuple[str, SortDir]:
    """The one sort key and direction a request asks for, read as Glance reads them: `sort=k[:d],...`
    or repeated `sort_key` and `sort_dir` (one `sort_dir` for every key, or one per key).

    The index holds one order per key: the key, then created_at, then id, all in one direction.
    Several keys are taken when Glance's order for them is that same order (the keys after the
    first are the tie-breakers Glance appends anyway, in the same direction); any other combination
    is a 400 saying what is supported, never a key silently dropped."""
    keys = list(repeated.get("sort_key") or ([params["sort_key"]] if "sort_key" in params else []))
    dirs = list(repeated.get("sort_dir") or ([params["sort_dir"]] if "sort_dir" in params else []))
    if "sort" in params:  # Glance's newer syntax: sort=key[:dir],key[:dir]
        if keys or dirs:
            raise InvalidRequest("Old and new sorting syntax cannot be combined")
        for part in params["sort"].strip().split(","):
            key, _, direction = part.partition(":")
            keys.append(key.strip())
            dirs.append(direction.strip() or SortDir.DESC.value)
    else:
        keys = [key.strip() for key in keys]
        dirs = [direction.strip() for direction in dirs]
    for key in keys:
        if key not in SORT_KEYS:
            raise InvalidRequest("Sort key supplied was not valid.")
    for direction in dirs:
        if direction not in (SortDir.ASC.value, SortDir.DESC.value):
            raise InvalidRequest(f"Invalid sort direction: {direction}")
    if len(dirs) > 1 and len(dirs) != len(keys):
        raise InvalidRequest("Number of sort dirs does not match the number of sort keys")
    keys = keys or [DEFAULT_SORT_KEY]
    default_dir = dirs[0] if len(dirs) == 1 else SortDir.DESC.value
    order = list(zip(keys, dirs if len(dirs) == len(keys) else [default_dir] * len(keys), strict=True))
    first_key, first_dir = order[0]
    if _glance_order(order, default_dir) != _glance_order([(first_key, first_dir)], first_dir):
        asked = ", ".join(f"{key}:{direction}" for key, direction in order)
        raise InvalidRequest(
            f"Sorting by several keys is not supported by this service (asked: {asked}). Sort by one "
            f"key, one of {', '.join(SORT_KEYS)}, in one direction: ties are then broken by "
            "created_at and id in that direction, as Glance does."
        )
    return first_key, SortDir(first_dir)


def _glance_order(order: list[tuple[str, str]], default_dir: str) -> list[tuple[str, str]]:
    """The order Glance sorts by: the keys asked, then created_at and id where missing (in the
    direction of a single `sort_dir`, else descending), up to id (ids are unique: nothing after it
    changes the order)."""
    full = list(order)
    full += [(key, default_dir) for key in ("created_at", "id") if key not in dict(order)]
    keys = [key for key, _ in full]
    return full[: keys.index("id") + 1]


def _scopes(caller: Caller, owner: str | None, visibility: str | None) -> tuple[list[str], list[Condition]]:
    """The scopes a caller's request reads, and the conditions they need on top."""
    conditions: list[Condition] = []
    if caller.is_admin:
        if owner is not None:
            return [f"p#{_part(owner)}"], conditions
        return ["a"], conditions
    own = f"p#{_part(caller.project_id)}"
    if owner is not None and owner != caller.project_id:
        # Another project's images a member may see: its public (and community) ones.
        conditions.append(Condition(field="owner", op="eq", values=(owner,)))
        if visibility in (None, "public"):
            return ["v#public"], conditions
        if visibility == "community":
            return ["v#community"], conditions
        if visibility == "all":
            return ["v#public", "v#community"], conditions
        return [], conditions  # their private or shared images: none without members
    if owner is not None or visibility in ("private", "shared"):
        return [own], conditions
    if visibility is None:
        return [own, "v#public"], conditions
    if visibility == "public":
        return ["v#public"], conditions
    if visibility == "community":
        return ["v#community"], conditions
    return [own, "v#public", "v#community"], conditions  # all


def parse_image_list(
    params: Mapping[str, str], caller: Caller, repeated: Mapping[str, Sequence[str]] | None = None
) -> ImageListRequest:
    """Glance's image list parameters → what to read; each problem is a 400 with Glance's wording
    where Glance has one. `params` holds each parameter's last value, `repeated` every value of
    those a client may repeat (`sort_key`, `sort_dir`, `tag`), as API Gateway passes them."""
    repeated = repeated or {}
    limit = _limit(params)
    marker = params.get("marker")
    if marker is not None and not UUID_LIKE.match(marker):
        raise InvalidRequest("Invalid marker format")
    sort_key, sort_dir = _sort(params, repeated)

    visibility = params.get("visibility")
    if visibility is not None and visibility not in (*VISIBILITIES, "all"):
        raise InvalidRequest(f"Invalid visibility value: {visibility}")
    hidden = _bool("os_hidden", params["os_hidden"]) if "os_hidden" in params else False
    owner = params.get("owner") or None
    scopes, conditions = _scopes(caller, owner, visibility)

    equalities = _equalities(params, caller, visibility, repeated)
    dimension: tuple[str, tuple[str, ...]] | None = equalities[0] if equalities else None
    conditions += [_equality_condition(field, values) for field, values in equalities[1:]]

    # Ranges: a key condition on the sort attribute when they bound it, residual otherwise.
    low, high = _size_range(params, sort_key, conditions)
    low, high = _time_ranges(params, sort_key, (low, high), conditions)

    if "protected" in params:
        conditions.append(
            Condition(field="protected", op="eq", values=(_bool("protected", params["protected"]),))
        )
    member_status = params.get("member_status", "accepted")
    if member_status not in ("accepted", "pending", "rejected", "all"):
        raise InvalidRequest(f"Invalid status value: {params['member_status']}")
    member_statuses = _member_statuses(caller, owner, visibility, member_status)

    ids = _ids(params)
    if ids is not None and dimension is not None:  # read by id: every equality is a condition
        conditions.insert(0, _equality_condition(*dimension))
        dimension = None

    return ImageListRequest(
        limit=limit,
        marker=marker,
        sort_key=sort_key,
        sort_dir=sort_dir,
        partitions=tuple(_partitions(scopes, hidden, dimension)),
        key_range=(low, high),
        conditions=tuple(conditions),
        ids=ids,
        hidden=hidden,
        member_statuses=member_statuses,
        shared_partitions=tuple(_partitions([SHARED_SCOPE], hidden, dimension)) if member_statuses else (),
    )


#: The scope images shared with the caller are matched in: no image has index rows in it; a shared
#: image's partitions in it (`shared_partitions_of`) say which filters it meets.
SHARED_SCOPE = "s"


def _member_statuses(
    caller: Caller, owner: str | None, visibility: str | None, member_status: str
) -> tuple[str, ...]:
    """The member statuses of the images shared with the caller's project that the list shows (Glance
    adds them to the caller's own, public and community images): none for admins (they list every
    image), for a list of the caller's own images, or of another visibility than shared."""
    if caller.is_admin or owner == caller.project_id or visibility not in (None, "shared", "all"):
        return ()
    if member_status == "all":
        return ("accepted", "pending", "rejected")
    return (member_status,)


def _limit(params: Mapping[str, str]) -> int:
    if "limit" not in params:
        return DEFAULT_LIMIT
    try:
        limit = int(params["limit"])
    except ValueError:
        raise InvalidRequest("limit param must be an integer") from None
    if limit < 0:
        raise InvalidRequest("limit param must be positive")
    return min(limit, MAX_LIMIT)


def _equalities(
    params: Mapping[str, str], caller: Caller, visibility: str | None, repeated: Mapping[str, Sequence[str]]
) -> list[tuple[str, tuple[str, ...]]]:
    """The equality filters, as (dimension name, values), in the order that makes the first one the
    partition."""
    equalities: list[tuple[str, tuple[str, ...]]] = []
    order = (*HASH_FILTERS, "name", "prop", "tag", "disk_format", "container_format", "status", "visibility")
    for name in order:
        if name == "prop":
            for key in sorted(set(params) - RESERVED):
                equalities.append((f"prop:{key}", (params[key],)))
        elif name == "tag":
            # Glance lists the images that have every tag asked for (`tag=a&tag=b`).
            tags = repeated.get("tag") or ([params["tag"]] if "tag" in params else [])
            equalities += [("tag", (tag,)) for tag in dict.fromkeys(tags)]
        elif name == "visibility":
            # A scope already says public or community; private/shared narrow one's own images,
            # and an admin's view narrows to any visibility.
            if visibility in ("private", "shared") or (caller.is_admin and visibility in VISIBILITIES):
                equalities.append(("visibility", (visibility,)))
        elif name in params:
            equalities.append((name, _values(name, params[name])))
    return equalities


def _equality_condition(field: str, values: tuple[str, ...]) -> Condition:
    if field == "tag":
        return Condition(field="tag", op="contains", values=values)
    if field.startswith("prop:"):
        values = tuple(indexed_value(value) for value in values)
    return Condition(field=field, op="in" if len(values) > 1 else "eq", values=values)


def _size_range(
    params: Mapping[str, str], sort_key: str, conditions: list[Condition]
) -> tuple[str | None, str | None]:
    """Key bounds when the list is sorted by size; otherwise conditions (added to `conditions`)."""
    size_min = _int("size_min", params["size_min"]) if "size_min" in params else None
    size_max = _int("size_max", params["size_max"]) if "size_max" in params else None
    if size_min is not None and size_max is not None and size_min > size_max:
        raise InvalidRequest("size_min cannot be greater than size_max")
    if sort_key == "size":
        low = f"{size_min:020d}" if size_min is not None else None
        high = f"{size_max + 1:020d}" if size_max is not None else None  # no value equals it
        return low, high
    if size_min is not None:
        conditions.append(Condition(field="size", op="ge", values=(size_min,)))
    if size_max is not None:
        conditions.append(Condition(field="size", op="le", values=(size_max,)))
    return None, None


def _time_ranges(
    params: Mapping[str, str],
    sort_key: str,
    key_range: tuple[str | None, str | None],
    conditions: list[Condition],
) -> tuple[str | None, str | None]:
    """`key_range` narrowed by the time filters on the sort attribute; the other time filters
    become conditions (added to `conditions`)."""
    low, high = key_range
    for name in TIME_FILTERS:
        if name not in params:
            continue
        operator, moment = _time_filter(name, params[name])
        start, end = clock.to_stored(moment), _second_after(moment)
        # Glance compares to the second: [start, end) is that second.
        bounds = {
            "gt": (end, None),
            "gte": (start, None),
            "lt": (None, start),
            "lte": (None, end),
            "eq": (start, end),
        }
        if sort_key == name and operator in bounds:
            lo, hi = bounds[operator]
            # Sort values are `<time>#...`: a bare time bound never equals one, so inclusive key
            # bounds behave as the strict ones above.
            low = max(filter(None, (low, lo)), default=None)
            high = min(filter(None, (high, hi)), default=None)
            continue
        residual: dict[str, tuple[str, tuple[str, ...]]] = {
            "gt": ("ge", (end,)),
            "gte": ("ge", (start,)),
            "lt": ("lt", (start,)),
            "lte": ("lt", (end,)),
            "eq": ("within", (start, end)),
            "neq": ("outside", (start, end)),
        }
        op, values = residual[operator]
        conditions.append(Condition(field=name, op=op, values=values))
    return low, high


def _ids(params: Mapping[str, str]) -> tuple[str, ...] | None:
    if "id" not in params:
        return None
    raw = params["id"]
    ids = tuple(
        dict.fromkeys(v.strip() for v in (raw[3:] if raw.startswith("in:") else raw).split(",") if v.strip())
    )
    if not ids or len(ids) > MAX_IDS:
        raise InvalidRequest(f"The id filter takes 1 to {MAX_IDS} ids")
    return ids


def _partitions(scopes: list[str], hidden: bool, dimension: tuple[str, tuple[str, ...]] | None) -> list[str]:
    if dimension is None:
        return [partition_key(scope, hidden, None) for scope in scopes]
    field, values = dimension
    return [partition_key(scope, hidden, (field, value)) for scope in scopes for value in values]
