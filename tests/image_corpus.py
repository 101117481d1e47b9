"""A corpus of good and bad disk images, built by the tests with qemu-img (never checked in).

Each ``make_<case>(directory) -> Path`` writes one image file into ``directory`` and returns its
path. ``BAD_IMAGES`` pairs each bad case with the ``disk_format`` a user would declare, the
substring the task's failure message must contain, and what else the case needs from the
deployment or the task input (a lower size limit, an expected checksum). ``GOOD_IMAGES`` lists
images that must pass with their declared format. Unit, integration and end-to-end tests share it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MiB = 1024 * 1024


def require_qemu_img() -> None:
    """Skip (rather than fail) where qemu-utils is not installed."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img (qemu-utils) is not installed")


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _random_raw(path: Path, size: int = MiB) -> Path:
    # Random data behind a zero first sector: nothing an inspector would mistake for a header.
    path.write_bytes(b"\0" * 512 + os.urandom(size - 512))
    return path


# -- good images -----------------------------------------------------------------------------


def make_raw(directory: Path) -> Path:
    return _random_raw(directory / "good.raw")


def make_qcow2(directory: Path) -> Path:
    source = _random_raw(directory / "qcow2-source.raw")
    out = directory / "good.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(source), str(out))
    return out


def make_vmdk(directory: Path) -> Path:
    out = directory / "good.vmdk"
    _qemu_img("create", "-f", "vmdk", str(out), "1M")
    return out


def make_vmdk_stream_optimized(directory: Path) -> Path:
    source = _random_raw(directory / "vmdk-source.raw")
    out = directory / "good-stream.vmdk"
    _qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(source), str(out))
    return out


def make_vhd(directory: Path) -> Path:
    out = directory / "good.vhd"
    _qemu_img("create", "-f", "vpc", str(out), "1M")
    return out


def make_vhdx(directory: Path) -> Path:
    source = _random_raw(directory / "vhdx-source.raw")
    out = directory / "good.vhdx"
    _qemu_img("convert", "-f", "raw", "-O", "vhdx", str(source), str(out))
    return out


# -- bad images ------------------------------------------------------------------------------


def make_qcow2_backing_file(directory: Path) -> Path:
    base = _random_raw(directory / "backing.raw")
    out = directory / "backing-file.qcow2"
    _qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "raw", str(out))
    return out


def make_qcow2_data_file(directory: Path) -> Path:
    out = directory / "data-file.qcow2"
    _qemu_img("create", "-f", "qcow2", "-o", f"data_file={directory / 'external-data.raw'}", str(out), "1M")
    return out


def make_vmdk_flat(directory: Path) -> Path:
    """A monolithicFlat VMDK: a text descriptor whose data lives in a separate file."""
    out = directory / "flat.vmdk"
    _qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(out), "1M")
    return out


def make_vmdk_host_file(directory: Path) -> Path:
    """A text VMDK descriptor whose extent is a file on the host that would read it."""
    out = directory / "host-file.vmdk"
    out.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicSparse"\n\n# Extent description\nRW 2048 SPARSE "/etc/hostname"\n'
    )
    return out


def make_vmdk_sparse_host_file(directory: Path) -> Path:
    """A real sparse VMDK whose embedded descriptor was edited to point at a host file."""
    out = make_vmdk(directory)
    data = bytearray(out.read_bytes())
    # The embedded descriptor starts at sector 1 and is NUL padded; keep its length.
    start, end = 512, data.index(b"\0", 512)
    text = data[start:end].replace(b'"good.vmdk"', b'"/etc/hostname"')
    data[start : start + len(text)] = text
    target = directory / "sparse-host-file.vmdk"
    target.write_bytes(bytes(data))
    return target


def make_qed(directory: Path) -> Path:
    out = directory / "image.qed"
    _qemu_img("create", "-f", "qed", str(out), "1M")
    return out


def make_qcow2_truncated(directory: Path) -> Path:
    """The first 100 bytes of a qcow2: its magic is there, the rest of the header is not."""
    out = directory / "truncated.qcow2"
    out.write_bytes(make_qcow2(directory).read_bytes()[:100])
    return out


def make_qcow2_huge_virtual(directory: Path) -> Path:
    out = directory / "huge-virtual.qcow2"
    _qemu_img("create", "-f", "qcow2", str(out), "10G")
    return out


def make_big_raw(directory: Path) -> Path:
    """3 MiB of raw data, for a deployment whose limit is lower."""
    return _random_raw(directory / "big.raw", 3 * MiB)


@dataclass(frozen=True)
class CorpusCase:
    name: str
    make: Callable[[Path], Path]
    disk_format: str
    #: For bad images: a substring of the failure message. For good ones: the detected format.
    expect: str
    container_format: str = "bare"
    #: Deployment settings the case needs (ImageCheckSettings field → value).
    settings: dict[str, int] = field(default_factory=dict)
    #: Checksums to put in the task input (``checksum`` / ``os_hash_value``).
    input_checksums: dict[str, str] = field(default_factory=dict)


BAD_IMAGES: tuple[CorpusCase, ...] = (
    CorpusCase("qcow2_backing_file", make_qcow2_backing_file, "qcow2", "it has a backing file"),
    CorpusCase("qcow2_data_file", make_qcow2_data_file, "qcow2", "it has an external data file"),
    CorpusCase("vmdk_flat", make_vmdk_flat, "vmdk", "create type 'monolithicflat' is not allowed"),
    CorpusCase("vmdk_host_file", make_vmdk_host_file, "vmdk", "its descriptor points at another file"),
    CorpusCase(
        "vmdk_sparse_host_file", make_vmdk_sparse_host_file, "vmdk", "its descriptor points at another file"
    ),
    CorpusCase(
        "vmdk_descriptor_as_raw", make_vmdk_host_file, "raw", "Image data is vmdk but disk_format says raw"
    ),
    CorpusCase("qcow2_as_raw", make_qcow2, "raw", "Image data is qcow2 but disk_format says raw"),
    CorpusCase("vhd_as_qcow2", make_vhd, "qcow2", "Image data is vhd but disk_format says qcow2"),
    CorpusCase(
        "raw_as_qcow2",
        make_raw,
        "qcow2",
        "Image data is raw (no known disk format) but disk_format says qcow2",
    ),
    CorpusCase("qed", make_qed, "qed", "disk_format 'qed' is not allowed"),
    CorpusCase("qed_as_raw", make_qed, "raw", "Image data is qed but disk_format says raw"),
    CorpusCase("qcow2_truncated", make_qcow2_truncated, "qcow2", "before the end of its qcow2 header"),
    CorpusCase(
        "over_size_limit",
        make_big_raw,
        "raw",
        "The image is larger than this cloud's limit of 2097152 bytes",
        settings={"max_image_size_bytes": 2 * MiB},
    ),
    CorpusCase(
        "virtual_size_over_limit",
        make_qcow2_huge_virtual,
        "qcow2",
        "virtual disk size (10737418240 bytes) is over this cloud's limit of 1 GiB",
        settings={"max_virtual_size_bytes": 1024 * MiB},
    ),
    CorpusCase(
        "wrong_os_hash_value",
        make_raw,
        "raw",
        "Image data does not match the expected os_hash_value",
        input_checksums={"os_hash_value": "0" * 128},
    ),
    CorpusCase(
        "wrong_checksum",
        make_raw,
        "raw",
        "Image data does not match the expected checksum",
        input_checksums={"checksum": "0" * 32},
    ),
)

GOOD_IMAGES: tuple[CorpusCase, ...] = (
    CorpusCase("raw", make_raw, "raw", "raw"),
    CorpusCase("qcow2", make_qcow2, "qcow2", "qcow2"),
    CorpusCase("vmdk", make_vmdk, "vmdk", "vmdk"),
    CorpusCase("vmdk_stream_optimized", make_vmdk_stream_optimized, "vmdk", "vmdk"),
    CorpusCase("vhd", make_vhd, "vhd", "vhd"),
    CorpusCase("vhdx", make_vhdx, "vhdx", "vhdx"),
)


def file_digests(path: Path) -> tuple[str, str]:
    """(md5 hex, sha512 hex) of a file, the reference the service's hashes are compared with."""
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    with path.open("rb") as f:
        while block := f.read(MiB):
            md5.update(block)
            sha512.update(block)
    return md5.hexdigest(), sha512.hexdigest()
