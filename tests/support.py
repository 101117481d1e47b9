"""Helpers shared by the test tiers: canonical events from events/, handler loading, the template."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def load_handler(function: str) -> ModuleType:
    """Import functions/<function>/app.py under a unique name (every function has an app.py)."""
    folder = ROOT / "functions" / function
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = f"fn_{function}_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    raw_body: str | None = None,
    query: dict[str, str] | None = None,
    project: str = "project-a",
    roles: str = "member",
    user: str = "user-1",
    authorized: bool = True,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The canonical REST proxy event, varied: method, path, body, query and caller."""
    event = copy.deepcopy(load_event("tasks_api_create_import.json"))
    event["httpMethod"] = method
    event["path"] = path
    event["requestContext"]["httpMethod"] = method
    event["requestContext"]["path"] = f"/v1{path}"
    if raw_body is not None:
        event["body"] = raw_body
    else:
        event["body"] = None if body is None else json.dumps(body)
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    if headers:
        event["headers"].update(headers)
        event["multiValueHeaders"].update({k: [v] for k, v in headers.items()})
    if authorized:
        event["requestContext"]["authorizer"] = {
            "principalId": user,
            "project_id": project,
            "user_id": user,
            "roles": roles,
        }
    else:
        event["requestContext"].pop("authorizer", None)
    return event


def query_of(link: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(link).query))


__all__ = ["ROOT", "api_event", "load_event", "load_handler", "query_of", "urlencode"]
