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
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
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


def make_qcow2_v2(directory: Path) -> Path:
    out = directory / "good-v2.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10", str(make_raw(directory)), str(out))
    return out


def make_qcow2_small_clusters(directory: Path) -> Path:
    """The smallest clusters (512 bytes): the most L1 entries per GiB."""
    out = directory / "small-clusters.qcow2"
    _qemu_img("create", "-f", "qcow2", "-o", "cluster_size=512", str(out), "3G")
    return out


def make_qcow2_large_clusters(directory: Path) -> Path:
    """The largest clusters (2 MiB): the fewest L1 entries."""
    out = directory / "large-clusters.qcow2"
    _qemu_img("create", "-f", "qcow2", "-o", "cluster_size=2M", str(out), "5G")
    return out


def make_qcow2_grown_with_snapshot(directory: Path) -> Path:
    """A disk grown twice (its L1 table grows by half each time) with an internal snapshot."""
    out = directory / "grown.qcow2"
    _qemu_img("create", "-f", "qcow2", "-o", "preallocation=metadata", str(out), "64M")
    _qemu_img("snapshot", "-c", "before", str(out))
    _qemu_img("resize", "-f", "qcow2", str(out), "+10G")
    _qemu_img("resize", "-f", "qcow2", str(out), "+100G")
    return out


def make_vdi(directory: Path) -> Path:
    out = directory / "good.vdi"
    _qemu_img("create", "-f", "vdi", str(out), "1M")
    return out


# -- bad images ------------------------------------------------------------------------------


def make_qcow2_backing_file(directory: Path) -> Path:
    base = _random_raw(directory / "backing.raw")
    out = directory / "backing-file.qcow2"
    _qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "raw", str(out))
    return out


def make_qcow2_short_backing_file(directory: Path) -> Path:
    """511 bytes: a qcow2 (v2) header whose backing file qemu-img opens, too short for the format
    inspectors (to them it is raw)."""
    name = b"/etc/hostname"
    header = struct.pack(
        ">4sIQIIQIIQQII", b"QFI\xfb", 2, 0x100, len(name), 16, MiB, 0, 1, 0x10000, 0x20000, 1, 0
    )
    data = bytearray(511)
    data[: len(header)] = header
    data[0x100 : 0x100 + len(name)] = name
    out = directory / "short-backing-file.qcow2"
    out.write_bytes(bytes(data))
    return out


def make_short_qcow2_header(directory: Path, size: int = 120) -> Path:
    """Just a qcow2 header: what qemu-img probes as qcow2, and nothing more."""
    out = directory / "short-header.img"
    out.write_bytes(struct.pack(">4sI", b"QFI\xfb", 3).ljust(size, b"\0"))
    return out


def make_short_vmdk_text(directory: Path) -> Path:
    """A bare VMDK text descriptor of a few lines, which qemu-img's probe reads as vmdk."""
    out = directory / "short-descriptor.img"
    out.write_bytes(b"# a note\nversion=1\n")
    return out


def make_short_raw(directory: Path) -> Path:
    """511 bytes of nothing in particular: a plain (tiny) raw disk."""
    out = directory / "short.raw"
    out.write_bytes(bytes(range(256)) + bytes(255))
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


HOST_SECRET = b"HOST-SECRET-0123456789"


def make_host_secret(directory: Path) -> Path:
    """A file of the worker's host that no image may ever read: a raw disk starting with
    ``HOST_SECRET``."""
    path = directory / "host-secret.raw"
    path.write_bytes(HOST_SECRET + b"\0" * (MiB - len(HOST_SECRET)))
    return path


def make_host_secret_vmdk(directory: Path) -> Path:
    """The same secret as a VMDK, the format qemu assumes for a VMDK's parent: when followed, its
    bytes really end up in the output (a raw parent would only make qemu fail after opening it)."""
    out = directory / "host-secret.vmdk"
    _qemu_img("convert", "-f", "raw", "-O", "vmdk", str(make_host_secret(directory)), str(out))
    return out


def _edit_vmdk_descriptor(
    source: Path, target: Path, edit: Callable[[bytes], bytes], capacity: int | None = None
) -> Path:
    """A copy of a sparse VMDK with its embedded descriptor (sector 1, NUL padded) rewritten."""
    data = bytearray(source.read_bytes())
    descriptor_sectors = struct.unpack_from("<Q", data, 36)[0]
    region = slice(512, 512 + descriptor_sectors * 512)
    text = edit(bytes(data[region]).split(b"\0", 1)[0])
    assert len(text) < descriptor_sectors * 512
    data[region] = text.ljust(descriptor_sectors * 512, b"\0")
    if capacity is not None:
        struct.pack_into("<Q", data, 12, capacity)
    target.write_bytes(bytes(data))
    return target


def make_vmdk_parent(
    directory: Path, hint: str, name: str = "parent-hint.vmdk", parent_cid: str = "12345678"
) -> Path:
    """A sparse VMDK whose descriptor names a parent: qemu opens ``hint`` as its backing file
    (and reads it when ``parent_cid`` is the parent's CID)."""

    def edit(text: bytes) -> bytes:
        parent = f'parentCID={parent_cid}\nparentFileNameHint="{hint}"'.encode()
        return text.replace(b"parentCID=ffffffff", parent)

    return _edit_vmdk_descriptor(make_vmdk(directory), directory / name, edit)


def make_vmdk_parent_host_file(directory: Path) -> Path:
    parent = make_host_secret_vmdk(directory)
    cid = re.search(rb"\nCID=([0-9a-f]+)", parent.read_bytes()[:4096])
    assert cid is not None
    return make_vmdk_parent(directory, str(parent), parent_cid=cid.group(1).decode())


def make_vmdk_parent_nbd(directory: Path) -> Path:
    # Port 9 (discard) on loopback: nothing listens in the tests that only check the refusal.
    return make_vmdk_parent(directory, "nbd://127.0.0.1:9", "parent-nbd.vmdk")


def make_vmdk_parent_cid(directory: Path) -> Path:
    """A delta disk: a parentCID but no hint (qemu would need the parent it cannot name)."""

    def edit(text: bytes) -> bytes:
        return text.replace(b"parentCID=ffffffff", b"parentCID=12345678")

    return _edit_vmdk_descriptor(make_vmdk(directory), directory / "parent-cid.vmdk", edit)


def make_vmdk_parent_hint_in_comment(directory: Path) -> Path:
    """qemu finds parentFileNameHint with strstr: a comment line is enough to name a parent."""

    def edit(text: bytes) -> bytes:
        return text.replace(b"# Extent description", b'# parentFileNameHint="/etc/hostname"')

    return _edit_vmdk_descriptor(make_vmdk(directory), directory / "parent-comment.vmdk", edit)


def make_vmdk_create_type_case(directory: Path, extent: str = "host-secret.raw") -> Path:
    """A text descriptor that oslo.utils reads as monolithicSparse (its first createType in any
    case) and qemu as monolithicFlat (its first in exact case), with a flat extent that has no
    "/" (oslo's only extent check): qemu opens the extent, here a host file next to the image."""
    make_host_secret(directory)
    out = directory / "create-type-case.vmdk"
    out.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'CREATETYPE="monolithicSparse"\ncreateType="monolithicFlat"\n'
        f'RW 2048 FLAT "{extent}" 0\n'
    )
    return out


def make_vmdk_capacity_zero(directory: Path, extent: str = "host-secret.raw") -> Path:
    """A sparse header announcing no capacity: qemu then treats the embedded descriptor as a
    descriptor file and opens its extents (the same create-type trick gets it past oslo.utils)."""
    make_host_secret(directory)

    def edit(text: bytes) -> bytes:
        text = text.replace(
            b'createType="monolithicSparse"', b'CREATETYPE="monolithicSparse"\ncreateType="monolithicFlat"'
        )
        return text.replace(b'RW 2048 SPARSE "good.vmdk"', f'RW 2048 FLAT "{extent}" 0'.encode())

    return _edit_vmdk_descriptor(make_vmdk(directory), directory / "capacity-zero.vmdk", edit, capacity=0)


def make_vmdk_two_extents(directory: Path) -> Path:
    def edit(text: bytes) -> bytes:
        return text.replace(
            b'RW 2048 SPARSE "good.vmdk"', b'RW 2048 SPARSE "good.vmdk"\nRW 2048 SPARSE "other.vmdk"'
        )

    return _edit_vmdk_descriptor(make_vmdk(directory), directory / "two-extents.vmdk", edit)


def make_vmdk_extent_protocol(directory: Path) -> Path:
    """An extent named with a protocol and no "/": oslo.utils lets it through."""

    def edit(text: bytes) -> bytes:
        return text.replace(b'"good.vmdk"', b'"nbd:127.0.0.1:9"')

    return _edit_vmdk_descriptor(make_vmdk(directory), directory / "extent-protocol.vmdk", edit)


def _edit_qcow2_header(directory: Path, name: str, fmt: str, offset: int, value: int) -> Path:
    data = bytearray(make_qcow2(directory).read_bytes())
    struct.pack_into(fmt, data, offset, value)
    out = directory / name
    out.write_bytes(bytes(data))
    return out


def make_qcow2_cluster_bits(directory: Path) -> Path:
    return _edit_qcow2_header(directory, "cluster-bits.qcow2", ">I", 20, 30)  # 1 GiB clusters


def make_qcow2_huge_l1(directory: Path) -> Path:
    return _edit_qcow2_header(directory, "huge-l1.qcow2", ">I", 36, 4 * MiB)  # 32 MiB of L1 for 1 MiB


def make_qcow2_small_l1(directory: Path) -> Path:
    # 1 TiB announced with the one L1 entry of a 1 MiB disk (which maps 512 MiB)
    return _edit_qcow2_header(directory, "small-l1.qcow2", ">Q", 24, 1024 * 1024 * MiB)


def make_qcow2_huge_refcount_table(directory: Path) -> Path:
    return _edit_qcow2_header(directory, "huge-refcount.qcow2", ">I", 56, 1 << 20)  # 64 GiB of table


def make_qcow2_l1_outside(directory: Path) -> Path:
    return _edit_qcow2_header(directory, "l1-outside.qcow2", ">Q", 40, 1 << 40)


def make_qcow2_encrypted(directory: Path) -> Path:
    return _edit_qcow2_header(directory, "encrypted.qcow2", ">I", 32, 1)  # crypt_method AES


def make_empty(directory: Path) -> Path:
    out = directory / "empty.img"
    out.write_bytes(b"")
    return out


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
    CorpusCase(
        "qcow2_511_bytes_backing_file_as_raw",
        make_qcow2_short_backing_file,
        "raw",
        "Image data is qcow2 to qemu-img (511 bytes, too short or malformed",
    ),
    CorpusCase(
        "qcow2_511_bytes_backing_file_as_ami",
        make_qcow2_short_backing_file,
        "ami",
        "Image data is qcow2 to qemu-img",
    ),
    CorpusCase(
        "qcow2_511_bytes_backing_file_as_qcow2",
        make_qcow2_short_backing_file,
        "qcow2",
        "before the end of its qcow2 header",
    ),
    CorpusCase("qcow2_header_only_as_raw", make_short_qcow2_header, "raw", "Image data is qcow2 to qemu-img"),
    CorpusCase("vmdk_text_probe_as_raw", make_short_vmdk_text, "raw", "Image data is vmdk to qemu-img"),
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
    CorpusCase(
        "vmdk_parent_host_file", make_vmdk_parent_host_file, "vmdk", "its descriptor names a parent image"
    ),
    CorpusCase("vmdk_parent_nbd", make_vmdk_parent_nbd, "vmdk", "its descriptor names a parent image"),
    CorpusCase("vmdk_parent_cid", make_vmdk_parent_cid, "vmdk", "it is a delta disk of a parent image"),
    CorpusCase(
        "vmdk_parent_hint_in_comment",
        make_vmdk_parent_hint_in_comment,
        "vmdk",
        "its descriptor names a parent image",
    ),
    CorpusCase("vmdk_create_type_case", make_vmdk_create_type_case, "vmdk", "it is not a single-file VMDK"),
    CorpusCase("vmdk_capacity_zero", make_vmdk_capacity_zero, "vmdk", "its header announces no capacity"),
    CorpusCase("vmdk_two_extents", make_vmdk_two_extents, "vmdk", "its descriptor lists 2 extents"),
    CorpusCase(
        "vmdk_extent_protocol", make_vmdk_extent_protocol, "vmdk", "its descriptor points at another file"
    ),
    CorpusCase(
        "qcow2_cluster_bits", make_qcow2_cluster_bits, "qcow2", "its cluster size (2^30 bytes) is invalid"
    ),
    CorpusCase(
        "qcow2_huge_l1", make_qcow2_huge_l1, "qcow2", "its L1 table (4194304 entries, 32 MiB) is far larger"
    ),
    CorpusCase("qcow2_small_l1", make_qcow2_small_l1, "qcow2", "its L1 table (1 entries) is too small"),
    CorpusCase(
        "qcow2_huge_refcount_table",
        make_qcow2_huge_refcount_table,
        "qcow2",
        "its refcount table (1048576 clusters) is outside what qemu accepts",
    ),
    CorpusCase("qcow2_l1_outside", make_qcow2_l1_outside, "qcow2", "its L1 table lies outside the file"),
    CorpusCase("qcow2_encrypted", make_qcow2_encrypted, "qcow2", "it is encrypted"),
    CorpusCase("empty_raw", make_empty, "raw", "The image is empty (0 bytes)"),
    CorpusCase("empty_qcow2", make_empty, "qcow2", "The image is empty (0 bytes)"),
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
    CorpusCase("vdi", make_vdi, "vdi", "vdi"),
    CorpusCase("qcow2_v2", make_qcow2_v2, "qcow2", "qcow2"),
    CorpusCase("qcow2_small_clusters", make_qcow2_small_clusters, "qcow2", "qcow2"),
    CorpusCase("qcow2_large_clusters", make_qcow2_large_clusters, "qcow2", "qcow2"),
    CorpusCase("qcow2_grown_with_snapshot", make_qcow2_grown_with_snapshot, "qcow2", "qcow2"),
)


def file_digests(path: Path) -> tuple[str, str]:
    """(md5 hex, sha512 hex) of a file, the reference the service's hashes are compared with."""
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    with path.open("rb") as f:
        while block := f.read(MiB):
            md5.update(block)
            sha512.update(block)
    return md5.hexdigest(), sha512.hexdigest()


# -- a network trap ---------------------------------------------------------------------------


class LoopbackListener:
    """A TCP listener on loopback that records whether anyone connected (and hangs up at once)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.2)
        self.port: int = self.socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
