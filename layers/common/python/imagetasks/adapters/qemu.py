"""qemu-img, the one program that reads and writes every disk format: convert and info.

Always called with an argument list (never a shell) and always with the source format given
explicitly: letting qemu-img probe the format of untrusted data is how a raw image that looks
like a qcow2 header gets to read host files through a "backing file".

On Lambda, qemu-img comes from the QemuLayer at /opt/bin with its libraries in /opt/lib; anywhere
else (tests, the local stack) it is whatever ``qemu-img`` is on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imagetasks.domain.failures import TaskFailure

LAYER_BINARY = Path("/opt/bin/qemu-img")
LAYER_LIBRARIES = "/opt/lib"
#: qemu-img info only reads headers; a few seconds is plenty even for a large image.
INFO_TIMEOUT_SECONDS = 60


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


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            # qemu-img prefixes its messages with its own name; the user knows who spoke.
            return line.removeprefix("qemu-img: ")
    return "no error message"


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
    ) -> None:
        """``qemu-img convert -f src_format -O dst_format [-o opt,...] src dst``; TaskFailure on error.

        Formats are qemu's names (``vpc`` for vhd). ``timeout`` is in seconds; the process is
        killed when it runs out, so a stuck conversion cannot eat the whole Lambda timeout.
        """
        binary, env = self._command()
        args = [binary, "convert", "-f", src_format, "-O", dst_format]
        if options:
            args += ["-o", ",".join(options)]
        args += [str(src_path), str(dst_path)]
        try:
            completed = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise TaskFailure(
                f"qemu-img could not convert the image within {int(timeout)} seconds; try a smaller image"
            ) from None
        if completed.returncode != 0:
            raise TaskFailure(f"qemu-img could not convert the image: {_first_line(completed.stderr)}")

    def info(self, path: Path, fmt: str | None = None) -> dict[str, Any]:
        """``qemu-img info --output=json`` of a file; ``fmt`` avoids probing untrusted data."""
        binary, env = self._command()
        args = [binary, "info", "--output=json"]
        if fmt is not None:
            args += ["-f", fmt]
        args.append(str(path))
        try:
            completed = subprocess.run(
                args, capture_output=True, text=True, timeout=INFO_TIMEOUT_SECONDS, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise TaskFailure("qemu-img could not read the image's header in time") from None
        if completed.returncode != 0:
            raise TaskFailure(f"qemu-img could not read the image: {_first_line(completed.stderr)}")
        info: dict[str, Any] = json.loads(completed.stdout)
        return info
