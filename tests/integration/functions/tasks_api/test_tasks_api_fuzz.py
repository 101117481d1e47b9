"""Property test: whatever arrives at POST /v2/tasks (random JSON shapes, unicode, huge numbers, deep
nesting, bytes that are not UTF-8), the tasks API answers below 500 with a JSON body, in Glance's
error shape when it refuses, and never with a traceback. In-process, through the handler, with an
API Gateway event; DNS is a fake that behaves as getaddrinfo does (no lookup leaves the machine)."""

from __future__ import annotations

import base64
import json
import socket
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetasks.domain import import_filter
from tests.support import api_event, call, load_handler

# ------------------------------------------------------------------ what is thrown at the API
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=20),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
LABELS = st.one_of(
    st.sampled_from(["", "a", "a" * 63, "a" * 64, "xn--", "-a", "127.0.0.1", "[::1]", "[::1", "bücher"]),
    st.text(max_size=70),
)
HOSTS = st.lists(LABELS, min_size=1, max_size=4).map(".".join)
PORTS = st.one_of(
    st.just(""),
    st.sampled_from([":0", ":00", ":080", ":", ":+80", ":65536", ":99999", ":80", ":443", ":8080"]),
    st.text(alphabet="0123456789+-x ", max_size=7).map(lambda p: ":" + p),
)
LOCATIONS = st.one_of(
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "file", "s3", ""]),
        HOSTS,
        PORTS,
        st.text(max_size=20),
    ),
    st.text(max_size=60),
    JSON_VALUES,
)
PROPERTY_KEYS = st.one_of(
    st.sampled_from(
        ["name", "disk_format", "container_format", "os_glance_x", "os_glance", "owner", "k" * 256]
    ),
    st.text(max_size=20),
)
PROPERTIES = st.one_of(
    st.dictionaries(
        PROPERTY_KEYS,
        st.one_of(st.sampled_from(["qcow2", "raw", "bare", "x" * 300]), JSON_VALUES),
        max_size=6,
    ),
    JSON_VALUES,
)
IMPORT_INPUTS = st.fixed_dictionaries(
    {},
    optional={
        "import_from": LOCATIONS,
        "import_from_format": st.one_of(st.sampled_from(["qcow2", "raw"]), JSON_VALUES),
        "image_properties": PROPERTIES,
        "checksum": JSON_VALUES,
        "os_hash_value": JSON_VALUES,
    },
)
TASK_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["import", "convert", "export", "copy"]), JSON_VALUES),
        "input": st.one_of(IMPORT_INPUTS, JSON_VALUES),
        "status": JSON_VALUES,
    },
)


def _json_text(value: Any) -> str:
    # allow_nan: NaN and Infinity go out as the bare tokens Python would accept back
    return json.dumps(value, ensure_ascii=False)


def _deep(depth: int, opener: str, closer: str, inner: str = "1") -> str:
    return opener * depth + inner + closer * depth


BODIES = st.one_of(
    TASK_BODIES.map(lambda body: ("text", _json_text(body))),
    TASK_BODIES.map(lambda body: ("text", json.dumps(body))),  # ASCII escapes: lone surrogates survive
    JSON_VALUES.map(lambda value: ("text", _json_text(value))),
    st.integers(min_value=0, max_value=3000).map(lambda n: ("text", _deep(n, "[", "]"))),
    st.integers(min_value=0, max_value=3000).map(
        lambda n: ("text", '{"type": "import", "input": ' + _deep(n, '{"a": ', "}") + "}")
    ),
    st.text(max_size=200).map(lambda text: ("text", text)),
    st.binary(max_size=200).map(lambda data: ("base64", base64.b64encode(data).decode())),
    st.text(max_size=40).map(lambda text: ("base64", text)),  # flagged base64, and perhaps not
    st.integers(min_value=4000, max_value=6000).map(lambda n: ("text", '{"a": ' + "7" * n + "}")),
)


# ------------------------------------------------------------------ the handler, with a fake DNS
def _getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
    host.encode("idna")  # what socket.getaddrinfo does first: UnicodeError for what IDNA refuses
    if "\x00" in host:
        raise ValueError("embedded null character")
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.fixture
def api(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    fake_socket = types.SimpleNamespace(
        getaddrinfo=_getaddrinfo,
        gaierror=socket.gaierror,
        EAI_AGAIN=socket.EAI_AGAIN,
        SOCK_STREAM=socket.SOCK_STREAM,
    )
    monkeypatch.setattr(import_filter, "socket", fake_socket)
    monkeypatch.setenv("IMPORT_ALLOW_LOOPBACK", "true")  # so that some bodies get past the filter
    module = load_handler("tasks_api")
    module.tasks_table.cache_clear()
    module.task_service.cache_clear()
    return module


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible, the run bounded
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(body=BODIES)
def test_any_body_gets_an_answer_below_500_in_glances_shape(api: Any, body: tuple[str, str]) -> None:
    kind, raw = body
    event = api_event("POST", "/v2/tasks")
    event["body"] = raw
    event["isBase64Encoded"] = kind == "base64"

    response = call(api, event)

    status = response["statusCode"]
    assert status < 500, response["body"][:1000]
    document = _strict_json(response["body"])
    assert "Traceback" not in response["body"] and 'File "' not in response["body"]
    if status >= 400:
        error = document["error"]
        assert set(error) == {"code", "title", "message"}
        assert error["code"] == status
        assert isinstance(error["title"], str) and isinstance(error["message"], str) and error["message"]
    else:
        assert status == 201 and document["status"] == "pending"
