"""An in-memory tasks API for the client's tests: the `Transport` port, and the same over loopback HTTP.

A task's life is scripted as the states it goes through; each long poll (`?wait=`) moves it one
state on, as the service answers a long poll at the next change. Requests are recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from imagetasks_client.tasks import Reply

TASK_ID = "8a3e5b8e-1d7c-4b0e-9f5e-0c6a1f2b3c4d"
OTHER_ID = "4c2f9d1e-7b3a-4e8f-a1c2-d3e4f5a6b7c8"
MiB = 1024 * 1024


def task_json(task_id: str = TASK_ID, status: str = "processing", **fields: Any) -> dict[str, Any]:
    """A task as the service shows it; `fields` adds or replaces (progress, error_code, result...)."""
    return {
        "id": task_id,
        "type": "import",
        "status": status,
        "input": {"import_from": "http://127.0.0.1/disk.qcow2", "import_from_format": "qcow2"},
        "result": None,
        "message": None,
        "owner": "demo-project",
        "created_at": "2026-12-07T02:00:00Z",
        "updated_at": "2026-12-07T02:00:05Z",
        "expires_at": "2026-12-09T02:00:05Z",
        "self": f"/v2/tasks/{task_id}",
        "schema": "/v2/schemas/task",
        **fields,
    }


def progress(step: str, done: int, total: int | None) -> dict[str, Any]:
    percent = None if total is None else min(100, done * 100 // total)
    return {"step": step, "bytes_done": done, "bytes_total": total, "percent": percent}


def error(status: int, message: str) -> Reply:
    body = {"error": {"code": status, "title": "Error", "message": message}}
    return Reply(status=status, body=body, text=json.dumps(body))


@dataclass
class FakeTasksApi:
    """`lives[id]`: the states a task goes through; `page_size`: tasks per list page;
    `outages`: answers (e.g. 503s) given, one per request, before any real one."""

    lives: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    page_size: int = 1000
    outages: list[Reply] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, json: Any = None
    ) -> Reply:
        params = dict(params or {})
        self.requests.append((method, path, params, json))
        if self.outages:
            return self.outages.pop(0)
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["tasks"]:
            return self._list(params)
        if method == "POST" and parts == ["tasks"]:
            return self._create(json)
        task_id = parts[1] if len(parts) > 1 else ""
        if task_id not in self.lives:
            return error(404, f"Could not find task {task_id}")
        life = self.lives[task_id]
        if method == "GET" and len(parts) == 2:
            if "wait" in params and len(life) > 1 and life[0]["status"] not in ("success", "failure"):
                life.pop(0)
            return Reply(200, life[0])
        if method == "POST" and parts[2:] == ["actions", "cancel"]:
            if life[0]["status"] in ("success", "failure"):
                return error(409, f"Task {task_id} is already {life[0]['status']} and cannot be cancelled")
            self.cancelled.append(task_id)
            return Reply(202, None)
        return error(405, "Method not allowed")

    def _list(self, params: dict[str, str]) -> Reply:
        rows = [life[0] for life in self.lives.values()]
        if "status" in params:
            rows = [row for row in rows if row["status"] == params["status"]]
        ids = [row["id"] for row in rows]
        start = ids.index(params["marker"]) + 1 if "marker" in params else 0
        size = int(params.get("limit", self.page_size))
        page = rows[start : start + size]
        # As Glance: the list leaves out what only `show` has (here: progress, error_code, input...).
        listed = [{k: row[k] for k in ("id", "type", "status", "owner", "self", "schema")} for row in page]
        body: dict[str, Any] = {"tasks": listed, "schema": "/v2/schemas/tasks"}
        if start + size < len(rows):
            body["next"] = f"/v2/tasks?limit={size}&marker={page[-1]['id']}"
        return Reply(200, body)

    def _create(self, body: Any) -> Reply:
        self.created.append(body)
        if body["type"] == "import" and "bad" in body["input"].get("import_from", ""):
            return error(400, "The given uri is not valid")
        task = task_json(f"00000000-0000-4000-8000-{len(self.created):012d}", "pending", type=body["type"])
        task["input"] = body["input"]
        self.lives.setdefault(task["id"], [task])
        return Reply(201, task)


class _Handler(BaseHTTPRequestHandler):
    api: FakeTasksApi
    token: str

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, method: str) -> None:
        if self.headers.get("X-Auth-Token") != self.token:
            reply = error(401, "The request you have made requires authentication.")
        else:
            url = urlsplit(self.path)
            path = url.path.removeprefix("/v2")
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            reply = self.api.request(method, path, params=dict(parse_qsl(url.query)), json=body)
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")


@contextmanager
def serving(api: FakeTasksApi, token: str) -> Iterator[str]:
    """The fake API on a loopback port; yields its root URL (`http://127.0.0.1:N`), the API at `/v2`."""
    handler = type("Handler", (_Handler,), {"api": api, "token": token})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
