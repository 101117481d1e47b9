"""What qemu-img would do with an image beyond reading it, judged from the image's own headers.

oslo.utils' format inspector decides *which* format an image is and runs Glance's safety checks,
but it reads the headers its own way, not qemu's. Two gaps matter here:

- VMDK: oslo accepts any ``key=value`` line of the descriptor and only refuses extent names with a
  ``/``. qemu opens ``parentFileNameHint`` (found anywhere in the descriptor, comments included) as
  a backing file, takes the *first* case-sensitive ``createType``, where oslo takes the first in any
  case, and opens every extent of a descriptor file by name, ``nbd:host:port`` included. So a VMDK is
  accepted only as qemu will read it as one single file: a sparse ``KDMV`` header with a capacity
  (capacity 0 makes qemu follow the embedded descriptor's extents), its descriptor at sector 1, no
  parent, one create type (monolithicSparse or streamOptimized) and one ``SPARSE`` extent.
- qcow2: oslo reads 104 bytes of the header (backing file, data file, feature bits). Tables that
  are huge, misplaced or inconsistent with the virtual size, absurd cluster sizes and encryption
  are refused here, at import, instead of failing the first conversion.

``header_problems`` gives the reasons (user-facing, empty when the image is acceptable) from the
first ``HEAD_BYTES`` bytes of the file and its size. The import checks call it on the streamed
data; the qemu adapter calls it again on the file, before every qemu-img run.
"""

from __future__ import annotations

import re
import struct

KiB = 1024
MiB = 1024 * KiB

#: The VMDK descriptor of a sparse file starts at sector 1; qemu reads up to 1 MiB of it.
VMDK_DESCRIPTOR_OFFSET = 0x200
VMDK_DESCRIPTOR_MAX = MiB
#: Enough of the file for every check below.
HEAD_BYTES = VMDK_DESCRIPTOR_OFFSET + VMDK_DESCRIPTOR_MAX

# qemu's own limits (block/qcow2.h): larger tables make it refuse the image or eat memory.
QCOW2_MIN_CLUSTER_BITS = 9
QCOW2_MAX_CLUSTER_BITS = 21
QCOW2_MAX_L1_BYTES = 32 * MiB
QCOW2_MAX_REFTABLE_BYTES = 8 * MiB
QCOW2_MAX_SNAPSHOTS = 65536
QCOW2_V2_HEADER = 72
QCOW2_V3_HEADER = 104
# Incompatible feature bits (docs/interop/qcow2.txt).
QCOW2_CORRUPT = 1 << 1
QCOW2_EXTERNAL_DATA_FILE = 1 << 2
QCOW2_EXTENDED_L2 = 1 << 4
QCOW2_KNOWN_INCOMPATIBLE = (1 << 5) - 1

VMDK_ALLOWED_CREATE_TYPES = ("monolithicsparse", "streamoptimized")
VMDK_NO_PARENT = "ffffffff"
_EXTENT = re.compile(r'^(rw|rdonly|noaccess)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)")?(?:\s+(\d+))?$')
_HEADER_FIELD = re.compile(r"^[\w.]+\s*=")


def header_problems(disk_format: str, head: bytes, file_size: int) -> list[str]:
    """Reasons to refuse an image of ``disk_format`` (Glance's or qemu's name), from its first
    bytes and its size; empty when the header is acceptable. Formats without references to other
    files in qemu (raw, iso, vhd/vpc, vhdx, vdi) have nothing to check here."""
    if disk_format == "qcow2":
        return qcow2_problems(head, file_size)
    if disk_format == "vmdk":
        return vmdk_problems(head)
    return []


# -- qcow2 -----------------------------------------------------------------------------------


def _size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} bytes"


def qcow2_problems(head: bytes, file_size: int) -> list[str]:
    if len(head) < QCOW2_V2_HEADER or head[:4] != b"QFI\xfb":
        return ["its qcow2 header is missing or truncated"]
    (
        version,
        backing_offset,
        backing_size,
        cluster_bits,
        virtual_size,
        crypt_method,
        l1_size,
        l1_offset,
        refcount_offset,
        refcount_clusters,
        nb_snapshots,
        snapshots_offset,
    ) = struct.unpack(">IQIIQIIQQIIQ", head[4:QCOW2_V2_HEADER])
    if version not in (2, 3):
        return [f"qcow2 version {version} is not supported (only 2 and 3)"]
    problems: list[str] = []
    if backing_offset or backing_size:
        problems.append("it has a backing file (flatten it with 'qemu-img convert' first)")
    if crypt_method:
        problems.append("it is encrypted; import the decrypted image")
    incompatible = 0
    if version == 3:
        if len(head) < QCOW2_V3_HEADER:
            return [*problems, "its qcow2 header is truncated"]
        (incompatible,) = struct.unpack(">Q", head[72:80])
        refcount_order, header_length = struct.unpack(">II", head[96:104])
        if incompatible & QCOW2_EXTERNAL_DATA_FILE:
            problems.append("it has an external data file (data_file); the image must hold its own data")
        if incompatible & QCOW2_CORRUPT:
            problems.append("qemu marked it corrupt; repair it with 'qemu-img check -r all' first")
        if incompatible & ~QCOW2_KNOWN_INCOMPATIBLE:
            problems.append(f"it uses qcow2 features this cloud does not know (0x{incompatible:x})")
        if refcount_order > 6:
            problems.append(f"its refcount width (2^{refcount_order} bits) is invalid (at most 64 bits)")
        if header_length < QCOW2_V3_HEADER:
            problems.append(f"its header length ({header_length}) is invalid")
    if not QCOW2_MIN_CLUSTER_BITS <= cluster_bits <= QCOW2_MAX_CLUSTER_BITS:
        problems.append(
            f"its cluster size (2^{cluster_bits} bytes) is invalid (qcow2 clusters are 512 bytes to 2 MiB)"
        )
        return problems  # every table size below is counted in clusters
    cluster = 1 << cluster_bits
    if version == 3 and header_length > cluster:
        problems.append(f"its header length ({header_length}) is larger than a cluster")
    problems += _qcow2_tables(
        cluster,
        virtual_size,
        l1_size,
        l1_offset,
        refcount_offset,
        refcount_clusters,
        nb_snapshots,
        snapshots_offset,
        file_size,
        extended_l2=bool(incompatible & QCOW2_EXTENDED_L2),
    )
    return problems


def _qcow2_tables(
    cluster: int,
    virtual_size: int,
    l1_size: int,
    l1_offset: int,
    refcount_offset: int,
    refcount_clusters: int,
    nb_snapshots: int,
    snapshots_offset: int,
    file_size: int,
    *,
    extended_l2: bool,
) -> list[str]:
    problems: list[str] = []
    # One L1 entry maps one L2 table, itself one cluster of 8-byte (16 with extended L2) entries.
    per_l1_entry = cluster * (cluster // (16 if extended_l2 else 8))
    needed = -(-virtual_size // per_l1_entry)
    # qemu makes L1 exactly `needed` entries and grows it by half when resizing; one cluster of
    # entries is slack for the rest.
    most = 2 * needed + cluster // 8
    if l1_size < needed:
        problems.append(
            f"its L1 table ({l1_size} entries) is too small for its virtual size ({needed} needed)"
        )
    elif l1_size * 8 > QCOW2_MAX_L1_BYTES or l1_size > most:
        problems.append(
            f"its L1 table ({l1_size} entries, {_size(l1_size * 8)}) is far larger than its virtual "
            f"size needs ({needed} entries)"
        )
    elif l1_size and not _inside(l1_offset, l1_size * 8, cluster, file_size):
        problems.append("its L1 table lies outside the file (the file is truncated or corrupt)")
    if refcount_clusters == 0 or refcount_clusters * cluster > QCOW2_MAX_REFTABLE_BYTES:
        problems.append(
            f"its refcount table ({refcount_clusters} clusters) is outside what qemu accepts "
            f"(1 cluster to {_size(QCOW2_MAX_REFTABLE_BYTES)})"
        )
    elif not _inside(refcount_offset, refcount_clusters * cluster, cluster, file_size):
        problems.append("its refcount table lies outside the file (the file is truncated or corrupt)")
    if nb_snapshots > QCOW2_MAX_SNAPSHOTS:
        problems.append(f"it claims {nb_snapshots} snapshots (qemu allows {QCOW2_MAX_SNAPSHOTS})")
    elif nb_snapshots and not _inside(snapshots_offset, 1, cluster, file_size):
        problems.append("its snapshot table lies outside the file (the file is truncated or corrupt)")
    return problems


def _inside(offset: int, length: int, cluster: int, file_size: int) -> bool:
    return offset > 0 and offset % cluster == 0 and offset + length <= file_size


# -- VMDK ------------------------------------------------------------------------------------


def vmdk_problems(head: bytes) -> list[str]:
    if not head.startswith(b"KDMV"):
        return [
            "it is not a single-file VMDK (a descriptor naming other files, or an old VMDK); only "
            "monolithicSparse and streamOptimized files are accepted"
        ]
    if len(head) < VMDK_DESCRIPTOR_OFFSET:
        return ["its VMDK header is truncated"]
    _version, _flags, capacity, _grain, descriptor_sector, descriptor_sectors = struct.unpack(
        "<IIQQQQ", head[4:44]
    )
    problems: list[str] = []
    if capacity == 0:
        # qemu then reads the embedded descriptor as a descriptor file and opens its extents.
        problems.append("its header announces no capacity, which makes it a descriptor of other files")
    if descriptor_sector != 1 or descriptor_sectors == 0:
        problems.append("its descriptor is not at the start of the file, where a single-file VMDK has it")
        return problems
    region = head[VMDK_DESCRIPTOR_OFFSET : VMDK_DESCRIPTOR_OFFSET + VMDK_DESCRIPTOR_MAX]
    end = region.find(b"\0")
    if end < 0:
        return [*problems, "its descriptor does not end within 1 MiB"]
    try:
        text = region[:end].decode("ascii").lower()
    except UnicodeDecodeError:
        return [*problems, "its descriptor is not ASCII text"]
    return problems + _descriptor_problems(text)


def _descriptor_problems(text: str) -> list[str]:
    problems: list[str] = []
    # qemu looks these names up with strstr: a comment counts as much as a line.
    if "parentfilenamehint" in text:
        problems.append(
            "its descriptor names a parent image (parentFileNameHint); flatten it with "
            "'qemu-img convert' first"
        )
    parents = (re.match(r'\s*=\s*"?([0-9a-z]*)"?', text[m.end() :]) for m in re.finditer("parentcid", text))
    if not problems and any(p is None or p.group(1) != VMDK_NO_PARENT for p in parents):
        problems.append("it is a delta disk of a parent image (its parentCID is set); flatten it first")
    create_types = {m.group(1) for m in re.finditer(r'createtype\s*=\s*"([^"]*)"', text)}
    if not create_types:
        problems.append("its descriptor has no createType")
    elif len(create_types) > 1:
        problems.append(f"its descriptor names several create types ({', '.join(sorted(create_types))})")
    elif not create_types <= set(VMDK_ALLOWED_CREATE_TYPES):
        problems.append(
            f"its create type {next(iter(create_types))!r} is not allowed "
            "(only monolithicSparse and streamOptimized)"
        )
    extents: list[re.Match[str]] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or line.startswith("ddb"):
            continue
        extent = _EXTENT.match(line)
        if extent is not None:
            extents.append(extent)
        elif not _HEADER_FIELD.match(line):
            problems.append("its descriptor has a line this cloud does not understand")
            break
    if len(extents) != 1:
        problems.append(
            f"its descriptor lists {len(extents)} extents; only one extent inside the file is accepted"
        )
    else:
        _access, _sectors, kind, name, offset = extents[0].groups()
        if kind != "sparse" or offset is not None:
            problems.append(f"its extent is {kind.upper()}, data kept outside the file")
        elif name is None or not name or re.search(r"[/\\:]", name):
            problems.append("its descriptor points at another file")
    return problems


#: How much of a file qemu-img reads to probe its format (BLOCK_PROBE_BUF_SIZE).
QEMU_PROBE_BYTES = 512
#: qemu's format probes by their first bytes: (format, offset, magic, the fewest bytes qemu needs).
_QEMU_MAGICS: tuple[tuple[str, int, bytes, int], ...] = (
    ("qcow2", 0, b"QFI\xfb", QCOW2_V2_HEADER),  # qcow (version 1) and qcow2: the version decides
    ("qed", 0, b"QED\x00", 64),
    ("vmdk", 0, b"KDMV", 4),
    ("vmdk", 0, b"COWD", 4),
    ("vpc", 0, b"conectix", 8),
    ("vhdx", 0, b"vhdxfile", 8),
    ("vdi", 0x40, struct.pack("<I", 0xBEDA107F), 0x44),
    ("parallels", 0, b"WithoutFreeSpace", 64),
    ("parallels", 0, b"WithouFreSpacExt", 64),
    ("bochs", 0, b"Bochs Virtual HD Image", 512),
    ("cloop", 0, b"#!/bin/sh\n#V2.0 Format\n", 24),
    ("luks", 0, b"LUKS\xba\xbe", 6),
)
_VMDK_TEXT_VERSION = re.compile(rb"^version=[123]\r?$", re.MULTILINE)


def qemu_probe(head: bytes) -> str | None:
    """The format qemu-img would take `head` (the file's first bytes) for when probing it, if not
    raw: whatever the format inspectors make of it (a file too short for their checks is "raw" to
    them), a consumer that lets qemu probe opens it as this format, with its backing file."""
    buf = head[:QEMU_PROBE_BYTES]
    for name, offset, magic, needed in _QEMU_MAGICS:
        if len(buf) >= needed and buf[offset : offset + len(magic)] == magic:
            if name == "qcow2":
                version = struct.unpack(">I", buf[4:8])[0]
                return "qcow" if version == 1 else "qcow2" if version >= 2 else None
            return name
    if _VMDK_TEXT_VERSION.search(buf):  # qemu's vmdk probe also takes a bare text descriptor
        return "vmdk"
    return None
