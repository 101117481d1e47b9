"""qemu-img, the one program that reads and writes every disk format: convert and info.

Always called with an argument list (never a shell), and never allowed to open anything but the
file it was given:

- the source is a ``json:`` block-device spec, not a file name: its format driver is named (no
  probing: a raw image that looks like a qcow2 header would otherwise get a "backing file"), its
  protocol is pinned to ``file`` (a name such as ``nbd:host:port`` stays a local file name), and
  ``"backing": null`` tells every driver it has no backing file, whatever the header says (qcow2
  backing files, VMDK ``parentFileNameHint``);
- before every run the source's headers are checked again (``disk_headers``): what qemu opens
  without a way to say no from the command line (a qcow2 external data file, the extents of a VMDK
  descriptor) is refused there;
- the output is an absolute path (no protocol prefix can apply) created with options from our own
  table only (no backing file, no ``-B``).

qemu-img's messages name those paths (the worker's working directory carries its process id): they
are rewritten before they reach the task's message.

A conversion runs with ``-p``: qemu-img then writes ``    (12.00/100%)\r`` to its standard output
(a pipe as much as a terminal) and flushes it each time. The percentage goes to the caller's
``on_progress`` on every change and at least every second; ``on_progress`` raising (the task ended)
kills qemu-img and removes its half-written output.

On Lambda, qemu-img comes from the QemuLayer at /opt/bin with its libraries in /opt/lib; anywhere
else (tests, the local stack) it is whatever ``qemu-img`` is on PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from imagetasks.domain.disk_headers import HEAD_BYTES, header_problems
from imagetasks.domain.failures import TaskFailure

LAYER_BINARY = Path("/opt/bin/qemu-img")
LAYER_LIBRARIES = "/opt/lib"
#: qemu-img info only reads headers; a few seconds is plenty even for a large image.
INFO_TIMEOUT_SECONDS = 60
#: How often a running conversion's ``on_progress`` hears from us when qemu-img says nothing new
#: (a stretch of the disk that takes long): it is also how the step learns that its task ended.
PROGRESS_POLL_SECONDS = 1.0
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


class QemuImgNotFound(RuntimeError):
    """The deployment lacks qemu-img (a packaging fault of ours, not something the user can fix)."""


def find_qemu_img() -> tuple[str, dict[str, str]]:
    """The qemu-img to run and the environment to run it in."""
    on_path = shutil.which("qemu-img")
    if on_path is not None:
        return on_path, dict(os.environ)
    if LAYER_BINARY.exists():
        env = dict(os.environ)
        # The layer's libraries first: the Lambda runtime (Amazon Linux) lacks most of them.
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (LAYER_LIBRARIES, env.get("LD_LIBRARY_PATH")) if p)
        return str(LAYER_BINARY), env
    raise QemuImgNotFound("qemu-img is neither on PATH nor at /opt/bin/qemu-img (the QemuLayer)")


def source_spec(path: Path, fmt: str | None) -> str:
    """The ``json:`` spec that makes qemu-img open ``path`` as ``fmt`` and nothing else."""
    # Absolute: a path that starts with "/" can never be read as "protocol:..." by qemu.
    spec: dict[str, Any] = {"backing": None, "file": {"driver": "file", "filename": str(path.absolute())}}
    if fmt is not None:
        spec = {"driver": fmt, **spec}
    return "json:" + json.dumps(spec, separators=(",", ":"))


def check_source(path: Path, fmt: str) -> None:
    """Refuse (TaskFailure) a source whose headers would make qemu-img open other files."""
    with path.open("rb") as data:
        head = data.read(HEAD_BYTES)
    problems = header_problems(fmt, head, path.stat().st_size)
    if problems:
        raise TaskFailure(f"The image cannot be converted: it is {fmt} and {'; '.join(problems)}")


#: What a qemu-img message means for the user, by a phrase it contains.
_HINTS = (
    ("No space left on device", "the converted image does not fit in the worker's working space"),
    ("Cannot allocate memory", "the worker ran out of memory; the image's tables are too large"),
)
_JSON_SPEC = re.compile(r"'?json:\{.*\}'?")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/[^\s'\",:]+")


def user_message(stderr: str, names: Mapping[str, str]) -> str:
    """qemu-img's error, without the worker's paths (its working directory names the process and
    the task), with what it means when we know."""
    lines = [line.strip().removeprefix("qemu-img: ") for line in stderr.splitlines() if line.strip()]
    # Warnings come first; the error that stopped it is the first line that is not one.
    errors = [line for line in lines if not line.startswith("warning:")] or lines
    text = errors[0] if errors else "no error message"
    for secret, shown in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(f"'{secret}'", shown).replace(secret, shown)
    text = _JSON_SPEC.sub("the image", text)
    text = _ABSOLUTE_PATH.sub("a file of the worker", text)
    for phrase, meaning in _HINTS:
        if phrase in text:
            return f"{text} ({meaning})"
    return text


class ProgressParser:
    """qemu-img ``-p``'s percentage, from its output as it arrives (in pieces of any size)."""

    def __init__(self) -> None:
        self.percent = 0.0
        self._pending = b""

    def feed(self, data: bytes) -> float:
        text = self._pending + data
        # Only entries already ended by \r (or \n) count; the rest waits for the next piece.
        end = max(text.rfind(b"\r"), text.rfind(b"\n")) + 1
        complete, self._pending = text[:end], text[end:][-64:]
        for match in _PERCENT.finditer(complete):
            self.percent = min(100.0, float(match.group(1)))
        return self.percent


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill qemu-img (and anything it started: it runs in its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class QemuImg:
    """A thin wrapper; ``binary``/``env`` are injectable so tests can run a failing stand-in."""

    def __init__(self, binary: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self._binary = binary
        self._env = dict(env) if env is not None else None

    def _command(self) -> tuple[str, dict[str, str]]:
        if self._binary is None:
            self._binary, found_env = find_qemu_img()
            if self._env is None:
                self._env = found_env
        return self._binary, self._env if self._env is not None else dict(os.environ)

    def convert(
        self,
        src_path: Path,
        src_format: str,
        dst_path: Path,
        dst_format: str,
        timeout: float,
        options: Sequence[str] = (),
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        """``qemu-img convert`` of ``src_path`` (read as ``src_format`` only, see the module's text)
        to ``dst_path`` as ``dst_format`` with ``-o options``; TaskFailure on error.

        Formats are qemu's names (``vpc`` for vhd). ``timeout`` is in seconds; the process is
        killed when it runs out, so a stuck conversion cannot eat the whole Lambda timeout.
        ``on_progress`` gets the percentage done (see the module's text); whatever it raises stops
        the conversion, and ``dst_path`` is removed.
        """
        check_source(src_path, src_format)
        self._convert_checked(src_path, src_format, dst_path, dst_format, timeout, options, on_progress)

    def _convert_checked(
        self,
        src_path: Path,
        src_format: str,
        dst_path: Path,
        dst_format: str,
        timeout: float,
        options: Sequence[str] = (),
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        """The qemu-img run itself, once ``check_source`` passed (the tests call it alone to show
        that the command line holds by itself)."""
        src_path, dst_path = src_path.absolute(), dst_path.absolute()  # no "protocol:" reading
        binary, env = self._command()
        spec = source_spec(src_path, src_format)
        args = [binary, "convert", "-p", "-O", dst_format]
        if options:
            args += ["-o", ",".join(options)]
        args += [spec, str(dst_path)]
        deadline = time.monotonic() + timeout
        # stderr to a file: read only at the end, it can never fill a pipe and block qemu-img.
        with (
            tempfile.TemporaryFile() as stderr,
            subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,  # killed as a group: nothing it started outlives it
            ) as process,
        ):
            try:
                returncode = self._follow(process, deadline, timeout, on_progress)
            except BaseException:
                _kill(process)
                dst_path.unlink(missing_ok=True)
                raise
            if returncode != 0:
                stderr.seek(0)
                message = stderr.read().decode(errors="replace")
                names = {spec: "the image", str(src_path): "the image", str(dst_path): "the converted image"}
                raise TaskFailure(f"qemu-img could not convert the image: {user_message(message, names)}")

    @staticmethod
    def _follow(
        process: subprocess.Popen[bytes],
        deadline: float,
        timeout: float,
        on_progress: Callable[[float], None] | None,
    ) -> int:
        """Read qemu-img's progress until it ends; its exit status. TaskFailure past the deadline."""
        assert process.stdout is not None
        output = process.stdout.fileno()
        parser = ProgressParser()
        late = TaskFailure(
            f"qemu-img could not convert the image within {int(timeout)} seconds; try a smaller image"
        )
        with selectors.DefaultSelector() as selector:
            selector.register(output, selectors.EVENT_READ)
            while True:
                wait = min(max(deadline - time.monotonic(), 0.0), PROGRESS_POLL_SECONDS)
                if selector.select(wait):
                    data = os.read(output, 65536)
                    if not data:
                        break  # qemu-img closed its output: it is ending
                    parser.feed(data)
                if time.monotonic() >= deadline:
                    raise late
                if on_progress is not None:
                    on_progress(parser.percent)
        try:
            return process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            raise late from None

    def info(self, path: Path, fmt: str | None = None) -> dict[str, Any]:
        """``qemu-img info --output=json`` of a file read as ``fmt``, checked first like a convert's
        source. Without ``fmt`` qemu-img probes the format (still opening no other file): only for
        data we wrote ourselves."""
        path = path.absolute()
        if fmt is not None:
            check_source(path, fmt)
        binary, env = self._command()
        spec = source_spec(path, fmt)
        args = [binary, "info", "--output=json", spec]
        try:
            completed = subprocess.run(
                args, capture_output=True, text=True, timeout=INFO_TIMEOUT_SECONDS, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise TaskFailure("qemu-img could not read the image's header in time") from None
        if completed.returncode != 0:
            names = {spec: "the image", str(path): "the image"}
            raise TaskFailure(f"qemu-img could not read the image: {user_message(completed.stderr, names)}")
        info: dict[str, Any] = json.loads(completed.stdout)
        return info
