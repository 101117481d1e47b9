"""Run Lambda handlers in-process, and make moto run them too.

moto ends every way it runs a function (the Invoke API used by Step Functions tasks, async invokes,
S3 notifications) in `LambdaFunction._invoke_lambda`, which without Docker returns an error. The hook
here replaces that one private method with `HandlerRunner.invoke`, which imports the function's real
handler from its CodeUri and calls it. `MotoLambdaHook.calls` lets a test fail loudly if a moto upgrade
stops calling the hook.

Environment: handlers read their settings from `os.environ`, which is process-wide, while handlers of
different functions run at the same time in different threads (the front's request threads, moto's
state machine threads). A lock around each call is not an option: a handler may wait on work that
another handler must do. So:

- every variable any function defines is written to the real environment once, at start (never
  deleted: deleting raced with botocore reading the environment in other threads);
- during a call, the calling thread sees exactly its function's environment through a thread-local
  overlay on `os.environ` (values of variables the function does not define are hidden). Two functions
  may therefore give the same variable different values. Threads a handler starts itself, and child
  processes, see only the process-wide values (for a variable with conflicting values: the first
  function's, which is logged at start).

Requests: Powertools' API resolvers keep the request being answered on their common base class
(`BaseRouter.current_event`), one per process, which is all Lambda needs (one invocation per
instance at a time). Here invocations of every function share a process, so each resolver keeps its
own request and Lambda context on itself (`own_request_per_resolver`); without that, a long poll
read another request's caller and answered 404, and a POST read a GET's empty body.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from local.template import REGION, FunctionSpec, find_function

log = logging.getLogger("local.lambda")

Handler = Callable[[Any, Any], Any]

#: API Gateway turns exactly this error message from an authorizer into a 401: an answer, not a crash.
AUTHORIZER_UNAUTHORIZED = "Unauthorized"


# ------------------------------------------------------------------ per-thread environment


class _ThreadLocalEnviron(os._Environ[str]):
    """`os.environ`, plus a per-thread overlay: a value, or None for "not set in this function".
    `in` and `get` are Mapping's, through `__getitem__`: they see the overlay too."""

    _local = threading.local()

    def _in_base(self, key: str) -> bool:
        # The real environment only: Mapping's `in` would come back to our __getitem__.
        return self.encodekey(key) in self._data  # type: ignore[attr-defined]

    def _overlay(self) -> dict[str, str | None] | None:
        stack: list[dict[str, str | None]] | None = getattr(self._local, "stack", None)
        return stack[-1] if stack else None

    def __getitem__(self, key: str) -> str:
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            value = overlay[key]
            if value is None:
                raise KeyError(key)
            return value
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            overlay[key] = value

    def __delitem__(self, key: str) -> None:
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            overlay[key] = None
        if self._in_base(key):
            super().__delitem__(key)

    def __iter__(self) -> Iterator[str]:
        overlay = self._overlay() or {}
        for key in list(super().__iter__()):
            if overlay.get(key, "") is not None:
                yield key
        for key, value in overlay.items():
            if value is not None and not self._in_base(key):
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @contextmanager
    def overlay(self, overlay: dict[str, str | None]) -> Iterator[None]:
        """The calling thread sees `overlay` until it leaves the block."""
        stack: list[dict[str, str | None]] = self._local.__dict__.setdefault("stack", [])
        stack.append(overlay)
        try:
            yield
        finally:
            stack.pop()


@functools.cache  # once per process: idempotent
def credentials_per_function() -> None:
    """botocore resolves credentials once per session and keeps them; boto3's default session is
    shared by every handler of this process. A client created during a handler call gets that
    function's role credentials instead, as each Lambda function has its own."""
    from botocore.credentials import Credentials
    from botocore.session import Session

    original = Session.get_credentials

    def get_credentials(self: Session) -> Any:
        # Inside a handler call, the calling thread's overlay holds its function's role credentials.
        overlay = os.environ._overlay() if isinstance(os.environ, _ThreadLocalEnviron) else None
        if not overlay or not overlay.get("AWS_ACCESS_KEY_ID"):
            return original(self)
        return Credentials(
            overlay["AWS_ACCESS_KEY_ID"] or "",
            overlay.get("AWS_SECRET_ACCESS_KEY") or "",
            overlay.get("AWS_SESSION_TOKEN"),
        )

    Session.get_credentials = get_credentials


def merged_environment(functions: Iterable[FunctionSpec]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The process-wide values (first function wins) and the variables whose values conflict."""
    merged: dict[str, str] = {}
    conflicts: dict[str, set[str]] = {}
    owners: dict[str, str] = {}
    for spec in functions:
        for key, value in spec.environment.items():
            if key not in merged:
                merged[key], owners[key] = value, spec.logical_id
            elif merged[key] != value:
                conflicts.setdefault(key, {owners[key]}).add(spec.logical_id)
    return merged, conflicts


@dataclass
class LocalLambdaContext:
    """What Powertools and handlers read from the Lambda context."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: int
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    identity: Any = None
    client_context: Any = None
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# ------------------------------------------------------------------ the runner


@dataclass(frozen=True)
class Invocation:
    payload: str  # JSON, as Lambda returns it
    errored: bool
    logs: str

    def result(self) -> Any:
        return json.loads(self.payload)


class FunctionDirectory:
    """The stack's functions, found by logical id, name or ARN; `invoke` is the runner's."""

    def __init__(self, functions: Iterable[FunctionSpec]) -> None:
        self.functions: dict[str, FunctionSpec] = {spec.logical_id: spec for spec in functions}

    def spec(self, name_or_arn: str) -> FunctionSpec | None:
        """By logical id, function name or ARN (a qualified ARN's qualifier is ignored)."""
        return find_function(self.functions, name_or_arn)

    def invoke(self, spec: FunctionSpec, event: Any) -> Invocation:
        raise NotImplementedError


@functools.cache  # once per process: idempotent
def own_request_per_resolver() -> None:
    """Each Powertools API resolver keeps its current request on itself, shadowing the class-wide
    value its `resolve` sets (see the module's docstring)."""
    from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
    from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

    resolve = ApiGatewayResolver.resolve

    @functools.wraps(resolve)
    def resolve_own(self: Any, event: Any, context: Any) -> Any:
        raw = event.raw_event if isinstance(event, BaseProxyEvent) else event
        self.current_event = self._to_proxy_event(raw)  # an instance attribute: shadows the class's
        self.lambda_context = context
        return resolve(self, event, context)

    ApiGatewayResolver.resolve = resolve_own  # type: ignore[method-assign]


class HandlerRunner(FunctionDirectory):
    """Imports each function's handler from its code folder (under a unique module name) and calls it."""

    def __init__(
        self,
        functions: Iterable[FunctionSpec],
        credentials: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(functions)
        own_request_per_resolver()
        # logical id → AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN of the function's role
        self.credentials: dict[str, Mapping[str, str]] = dict(credentials or {})
        # Idle instances of each function: as on Lambda, one invocation per instance at a time, and a
        # new instance (a fresh import of the handler module) when all are busy, so that no module-level
        # state (Powertools' resolver keeps the current request there) is shared by concurrent calls.
        self._idle: dict[str, list[Handler]] = {}
        self._instances: dict[str, int] = {}
        # `_import_lock` for the bookkeeping of instances (held for a moment), `_loading_lock` for
        # loading one (sys.modules and sys.path are shared: one import at a time). With one lock for
        # both, every invocation that ended stood behind every instance being loaded.
        self._import_lock = threading.Lock()
        self._loading_lock = threading.Lock()
        environ = os.environ
        if not isinstance(environ, _ThreadLocalEnviron):  # installed once, on the real environment's storage
            data = environ._data  # type: ignore[attr-defined]
            environ = _ThreadLocalEnviron(
                data, environ.encodekey, environ.decodekey, environ.encodevalue, environ.decodevalue
            )
            os.environ = environ  # noqa: B003 - same storage, only reads gain the overlay
        self._environ = environ
        merged, conflicts = merged_environment(self.functions.values())
        for key, owners in sorted(conflicts.items()):
            log.info(
                "%s has different values in %s: each handler sees its own; threads it starts see %r",
                key,
                ", ".join(sorted(owners)),
                merged[key],
            )
        for key, value in merged.items():
            os.environ[key] = value  # overwrite, never delete
        for spec in self.functions.values():
            for layer in spec.layer_paths:
                if str(layer) not in sys.path:
                    sys.path.insert(0, str(layer))
        self._union = set(merged)

    def environment_of(self, spec: FunctionSpec) -> dict[str, str | None]:
        """What the function sees during a call: its variables, Lambda's own, nothing else of ours."""
        overlay: dict[str, str | None] = dict.fromkeys(self._union)
        overlay.update(spec.environment)
        overlay.update(
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            AWS_LAMBDA_FUNCTION_NAME=spec.name,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(spec.memory_mb),
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{spec.name}",
            _HANDLER=spec.handler,
        )
        overlay.update(self.credentials.get(spec.logical_id, {}))
        return overlay

    def as_function(self, logical_id: str) -> Any:
        """The calling thread sees what a handler of `logical_id` sees (its variables, its role)."""
        return self._environ.overlay(self.environment_of(self.functions[logical_id]))

    def _acquire(self, spec: FunctionSpec) -> Handler:
        with self._import_lock:  # never held while a handler runs, nor while one is loaded
            idle = self._idle.setdefault(spec.logical_id, [])
            if idle:
                return idle.pop()
            instance = self._instances.get(spec.logical_id, 0)
            self._instances[spec.logical_id] = instance + 1
        with self._loading_lock:
            return _import_handler(spec, instance)

    def _release(self, spec: FunctionSpec, handler: Handler) -> None:
        with self._import_lock:
            self._idle[spec.logical_id].append(handler)

    def instances(self, logical_id: str) -> int:
        """How many instances of the function were started (grows with concurrent invocations)."""
        return self._instances.get(logical_id, 0)

    def running(self, logical_id: str) -> int:
        """How many invocations of the function are running now (tests wait for a step to end)."""
        with self._import_lock:
            return self._instances.get(logical_id, 0) - len(self._idle.get(logical_id, []))

    def invoke(self, spec: FunctionSpec, event: Any) -> Invocation:
        """Call the handler as Lambda would; an unhandled exception becomes Lambda's error payload."""
        context = LocalLambdaContext(spec.name, spec.arn, spec.memory_mb, spec.timeout_seconds)
        started = time.monotonic()
        with self._environ.overlay(self.environment_of(spec)):
            try:
                handler = self._acquire(spec)
            except Exception as error:  # an import error is the invocation's error, as on Lambda
                return self._error(spec, context, error)
            try:
                result = handler(event, context)
            except Exception as error:
                return self._error(spec, context, error)
            finally:
                self._release(spec, handler)
        elapsed = time.monotonic() - started
        if elapsed > spec.timeout_seconds:
            log.warning(
                "%s ran %.1f s; Lambda would have stopped it after %d s",
                spec.logical_id,
                elapsed,
                spec.timeout_seconds,
            )
        try:
            return Invocation(payload=json.dumps(result), errored=False, logs="")
        except (TypeError, ValueError) as error:
            log.error("%s returned something that is not JSON: %s", spec.logical_id, error)
            payload = {"errorType": "Runtime.MarshalError", "errorMessage": str(error)}
            return Invocation(payload=json.dumps(payload), errored=True, logs=str(error))

    def _error(self, spec: FunctionSpec, context: LocalLambdaContext, error: Exception) -> Invocation:
        trace = traceback.format_exception(error)
        if str(error) == AUTHORIZER_UNAUTHORIZED:
            log.info("%s refused the request (Unauthorized)", spec.logical_id)
        else:
            # moto swallows errors of S3-triggered invocations: this log line is the only trace of them.
            log.error(
                "%s raised %s (request %s)\n%s",
                spec.logical_id,
                type(error).__name__,
                context.aws_request_id,
                "".join(trace),
            )
        payload = {
            "errorType": type(error).__name__,
            "errorMessage": str(error),
            "requestId": context.aws_request_id,
            "stackTrace": traceback.format_list(traceback.extract_tb(error.__traceback__)),
        }
        return Invocation(payload=json.dumps(payload), errored=True, logs="".join(trace))


def _import_handler(spec: FunctionSpec, instance: int) -> Handler:
    """Load `module.attr` from the code folder under a module name no other function (or other
    instance of this one) can share."""
    module_path, _, attribute = spec.handler.rpartition(".")
    if not module_path:
        raise ImportError(f"{spec.logical_id}: handler {spec.handler!r} is not module.function")
    source = spec.code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
    owner = f"{spec.logical_id}_{instance}" if instance else spec.logical_id
    unique_name = f"_local_lambda_{owner}_{module_path.replace('.', '_')}"
    module_spec = importlib.util.spec_from_file_location(unique_name, source)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"{spec.logical_id}: cannot load {source}")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running it: dataclasses and pydantic look their module up in sys.modules.
    sys.modules[unique_name] = module
    # The code folder is importable while the module runs, as in Lambda, for sibling modules;
    # those siblings are then renamed out of the way so another function's same-named ones load too.
    # Siblings someone else already loaded under their plain names (a test importing the handler
    # directly) step aside meanwhile: an instance shares no module state with anything, as in Lambda.
    earlier = {  # loaded under their own names, not an instance's
        name: loaded
        for name, loaded in list(sys.modules.items())
        if not name.startswith("_local_lambda_") and _from_folder(loaded, spec.code_dir)
    }
    for name in earlier:
        del sys.modules[name]
    before = set(sys.modules)
    sys.path.insert(0, str(spec.code_dir))
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique_name]
        raise
    finally:
        sys.path.remove(str(spec.code_dir))
        for name in set(sys.modules) - before - {unique_name}:
            if _from_folder(sys.modules.get(name), spec.code_dir):
                sys.modules[f"_local_lambda_{owner}_{name}"] = sys.modules.pop(name)
        sys.modules.update(earlier)
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise ImportError(f"{spec.logical_id}: {source} has no function {attribute}")
    return cast(Callable[[Any, Any], Any], handler)


def _from_folder(module: ModuleType | None, code_dir: Path) -> bool:
    """Whether `module` was loaded from a file in `code_dir` (or below it)."""
    file = getattr(module, "__file__", None) or ""
    if not isinstance(file, str) or not file:
        return False
    folder = _real_path(str(code_dir))
    return _real_path(file).startswith(folder.rstrip(os.sep) + os.sep)


@functools.cache
def _real_path(path: str) -> str:
    # Each new handler instance looks at every loaded module's file (about 1,700): resolved anew,
    # that was some 27,000 lstat calls per instance, each a release of the GIL that a busy process
    # is slow to give back (an authorizer instance took 30 s to load under load). A module's file
    # does not move while the stack runs.
    return os.path.realpath(path)


# ------------------------------------------------------------------ the moto hook


class MotoLambdaHook:
    """Replaces moto's `LambdaFunction._invoke_lambda` with the runner, for functions the runner knows."""

    def __init__(self, runner: FunctionDirectory) -> None:
        self.runner = runner
        # How many times moto called the hook: a test asserts it grows, so a moto change cannot go unseen.
        self.calls = 0
        self._count_lock = threading.Lock()
        self._original: Any = None
        self._pending: list[threading.Thread] = []

    def install(self) -> None:
        from moto.awslambda.models import LambdaFunction

        if self._original is not None:
            return
        original = LambdaFunction.__dict__.get("_invoke_lambda")
        if original is None:
            raise RuntimeError(
                "moto has no LambdaFunction._invoke_lambda any more: the local stack needs updating"
            )
        self._original = original

        def _invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
            with self._count_lock:
                self.calls += 1
            spec = self.runner.spec(function.function_name)
            if spec is None:  # a function this stack did not create: moto's own behaviour
                return cast(tuple[str, bool, str], original(function, event))
            parsed = _as_event(event)
            if is_s3_event(parsed):
                # S3 invokes its notification targets asynchronously, after the object exists.
                # moto calls us from inside put_object, before it stores the object's metadata, so
                # run the handler on its own thread, once the request that stored the object is done.
                thread = threading.Thread(
                    target=self._invoke_after_store, args=(spec, parsed), name="s3-notification", daemon=True
                )
                with self._count_lock:
                    self._pending = [t for t in self._pending if t.is_alive()] + [thread]
                thread.start()
                return "", False, ""
            invocation = self.runner.invoke(spec, parsed)
            return invocation.payload, invocation.errored, invocation.logs

        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]

    def wait_for_notifications(self, timeout: float = 30) -> None:
        """Wait until the S3-triggered invocations started so far have finished (tests use this)."""
        with self._count_lock:
            pending = list(self._pending)
        deadline = time.monotonic() + timeout
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _invoke_after_store(self, spec: Any, event: Any) -> None:
        time.sleep(S3_NOTIFICATION_DELAY_SECONDS)
        self.runner.invoke(spec, event)  # errors are logged with their traceback by the runner

    def uninstall(self) -> None:
        from moto.awslambda.models import LambdaFunction

        if self._original is not None:
            LambdaFunction._invoke_lambda = self._original  # type: ignore[method-assign]
            self._original = None


S3_NOTIFICATION_DELAY_SECONDS = 0.2


def is_s3_event(event: Any) -> bool:
    """Whether `event` is S3's notification (every record of it from `aws:s3`)."""
    records = event.get("Records") if isinstance(event, dict) else None
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(record, dict) and record.get("eventSource") == "aws:s3" for record in records)
    )


def _as_event(event: Any) -> Any:
    """moto hands over the parsed body, or the string "{}" when the request had none."""
    if isinstance(event, bytes | str):
        try:
            return json.loads(event or "{}")
        except ValueError:
            return event
    return {} if event is None else event
