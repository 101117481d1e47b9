"""Streaming image checks against the qemu-img corpus (local files, no network, no AWS)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagetasks.domain.disk_headers import qemu_probe
from imagetasks.domain.image_checks import (
    ExpectedChecksums,
    ImageChecker,
    ImageCheckSettings,
    ImageVerdict,
    check_declared_formats,
    format_matches,
)
from imagetasks.domain.import_errors import (
    ChecksumMismatch,
    DiskFormatNotAllowed,
    ImageRejected,
    ImageTooLarge,
)
from tests.image_corpus import (
    BAD_IMAGES,
    GOOD_IMAGES,
    CorpusCase,
    MiB,
    file_digests,
    make_qcow2,
    make_qcow2_backing_file,
)

CHUNK = 64 * 1024


pytestmark = pytest.mark.qemu_img  # skipped where qemu-img is not installed


def chunks_of(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(size):
            yield block


def run_checks(path: Path, checker: ImageChecker) -> ImageVerdict:
    for chunk in chunks_of(path):
        checker.feed(chunk)
    md5, sha512 = file_digests(path)
    return checker.finish(checksum=md5, os_hash_value=sha512)


def checker_for(case: CorpusCase, **overrides: object) -> ImageChecker:
    settings = ImageCheckSettings(**{**case.settings, **overrides})
    expected = ExpectedChecksums(**case.input_checksums)
    return ImageChecker(settings, case.disk_format, case.container_format, expected)


@pytest.mark.parametrize("case", BAD_IMAGES, ids=lambda c: c.name)
def test_bad_image_is_refused_with_its_message(case: CorpusCase, tmp_path: Path) -> None:
    # Given a bad image from the corpus
    path = case.make(tmp_path)
    # When it streams through the checks with the deployment settings it needs
    with pytest.raises(ImageRejected) as refused:
        run_checks(path, checker_for(case))
    # Then the failure says what is wrong with it
    assert case.expect in refused.value.message


@pytest.mark.parametrize("case", GOOD_IMAGES, ids=lambda c: c.name)
def test_good_image_passes_with_its_format_and_virtual_size(case: CorpusCase, tmp_path: Path) -> None:
    path = case.make(tmp_path)
    verdict = run_checks(path, checker_for(case))
    assert verdict.detected_format == case.expect
    assert verdict.size == path.stat().st_size
    assert verdict.virtual_size is not None and verdict.virtual_size >= MiB


def test_size_limit_stops_the_stream_as_soon_as_it_is_passed() -> None:
    checker = ImageChecker(ImageCheckSettings(max_image_size_bytes=3 * CHUNK), "raw")
    fed = 0
    with pytest.raises(ImageTooLarge):
        for _ in range(100):
            checker.feed(os.urandom(CHUNK))
            fed += 1
    assert fed == 3  # the fourth chunk raised; nothing after it was read


def test_announced_size_over_the_limit_is_refused_before_reading() -> None:
    checker = ImageChecker(ImageCheckSettings(max_image_size_bytes=MiB), "raw")
    with pytest.raises(ImageTooLarge, match="announces 2097152 bytes"):
        checker.check_announced_size(2 * MiB)
    checker.check_announced_size(None)  # unknown length: the streaming check will do


def test_format_mismatch_is_refused_from_the_headers(tmp_path: Path) -> None:
    # A qcow2 declared raw: once every inspector has its header (256 KiB, for VHDX) the format
    # is known, and the rest of the image is never read.
    path = make_qcow2(tmp_path)
    checker = ImageChecker(ImageCheckSettings(), "raw")
    stream = chunks_of(path, 512 * 1024)
    with pytest.raises(ImageRejected, match="Image data is qcow2 but disk_format says raw"):
        checker.feed(next(stream))
    assert path.stat().st_size > 1024 * 1024


def test_safety_checks_can_be_switched_off(tmp_path: Path) -> None:
    path = make_qcow2_backing_file(tmp_path)
    verdict = run_checks(path, ImageChecker(ImageCheckSettings(safety_checks=False), "qcow2"))
    assert verdict.detected_format == "qcow2"


def test_format_match_can_be_switched_off(tmp_path: Path) -> None:
    verdict = run_checks(
        make_qcow2(tmp_path), ImageChecker(ImageCheckSettings(require_format_match=False), "raw")
    )
    assert verdict.detected_format == "qcow2"


def test_inspection_can_be_switched_off(tmp_path: Path) -> None:
    path = make_qcow2_backing_file(tmp_path)
    verdict = run_checks(path, ImageChecker(ImageCheckSettings(inspect_format=False), "raw"))
    assert (verdict.detected_format, verdict.virtual_size) == (None, None)


def test_checksums_match_when_right_and_are_ignored_when_switched_off(tmp_path: Path) -> None:
    path = make_qcow2(tmp_path)
    md5, sha512 = file_digests(path)
    right = ExpectedChecksums(checksum=md5.upper(), os_hash_value=sha512)
    assert run_checks(path, ImageChecker(ImageCheckSettings(), "qcow2", "bare", right)).size > 0
    wrong = ExpectedChecksums(checksum="0" * 32)
    with pytest.raises(ChecksumMismatch):
        run_checks(path, ImageChecker(ImageCheckSettings(), "qcow2", "bare", wrong))
    run_checks(
        path, ImageChecker(ImageCheckSettings(verify_expected_checksums=False), "qcow2", "bare", wrong)
    )


def test_expected_checksum_must_be_hex() -> None:
    with pytest.raises(ValueError):
        ExpectedChecksums(checksum="not-a-digest")


def test_gpt_safety_failures_can_be_made_nonfatal() -> None:
    # An MBR signature with no partition defined: detected gpt, fails the "mbr" safety check.
    sector = bytearray(512)
    sector[510:512] = b"\x55\xaa"
    data = bytes(sector) + b"\0" * (64 * 1024)
    strict = ImageChecker(ImageCheckSettings(), "raw")
    strict.feed(data)
    with pytest.raises(ImageRejected, match="Image data is gpt and is not allowed"):
        strict.finish(checksum="", os_hash_value="")
    lenient = ImageChecker(ImageCheckSettings(gpt_safety_checks_nonfatal=True), "raw")
    lenient.feed(data)
    assert lenient.finish(checksum="", os_hash_value="").detected_format == "gpt"


@pytest.mark.parametrize(
    ("declared", "detected", "accepted"),
    [
        ("qcow2", "qcow2", True),
        ("raw", "raw", True),
        ("raw", "gpt", True),  # a partitioned raw disk
        ("ami", "raw", True),  # no inspector for ami: unrecognised content is what it looks like
        ("raw", "qcow2", False),
        ("qcow2", "raw", False),  # we would have recognised a qcow2
        ("vmdk", "gpt", False),
        ("ploop", "qcow2", False),
    ],
)
def test_format_match_rules(declared: str, detected: str, accepted: bool) -> None:
    assert format_matches(declared, detected) is accepted


def test_declared_formats_must_be_offered() -> None:
    settings = ImageCheckSettings(allowed_disk_formats=("qcow2",), allowed_container_formats=("bare",))
    check_declared_formats("qcow2", "bare", settings)
    with pytest.raises(
        DiskFormatNotAllowed, match="disk_format 'raw' is not allowed; this cloud accepts qcow2"
    ):
        check_declared_formats("raw", "bare", settings)
    with pytest.raises(DiskFormatNotAllowed, match="container_format 'ovf' is not allowed"):
        check_declared_formats("qcow2", "ovf", settings)


@pytest.mark.parametrize("case", GOOD_IMAGES, ids=lambda c: c.name)
def test_good_image_passes_when_fed_in_the_fetch_steps_8_mib_chunks(case: CorpusCase, tmp_path: Path) -> None:
    path = case.make(tmp_path)
    checker = checker_for(case)

    with path.open("rb") as source:
        while chunk := source.read(8 * MiB):
            checker.feed(chunk)
    md5, sha512 = file_digests(path)
    verdict = checker.finish(checksum=md5, os_hash_value=sha512)

    assert verdict.detected_format == case.expect


@pytest.mark.parametrize(
    ("head", "probed"),
    [
        (struct.pack(">4sI", b"QFI\xfb", 3).ljust(104, b"\0"), "qcow2"),
        (struct.pack(">4sI", b"QFI\xfb", 2).ljust(72, b"\0"), "qcow2"),
        (struct.pack(">4sI", b"QFI\xfb", 1).ljust(72, b"\0"), "qcow"),
        (struct.pack(">4sI", b"QFI\xfb", 0).ljust(72, b"\0"), None),
        (b"QFI\xfb", None),  # shorter than any qcow header: qemu does not take it for one
        (b"QED\0".ljust(64, b"\0"), "qed"),
        (b"KDMV", "vmdk"),
        (b"conectix", "vpc"),
        (b"vhdxfile", "vhdx"),
        (bytes(0x40) + struct.pack("<I", 0xBEDA107F), "vdi"),
        (b"WithoutFreeSpace".ljust(64, b"\0"), "parallels"),
        (b"LUKS\xba\xbe\0\x01", "luks"),
        (b"# Disk DescriptorFile\nversion=1\n", "vmdk"),
        (b"version=4\n", None),
        (b"x" * 600 + b"\nversion=1\n", None),  # past the 512 bytes qemu probes
        (bytes(range(256)) * 2, None),
        (b"", None),
    ],
)
def test_qemu_probe_reads_the_first_bytes_as_qemu_img_does(head: bytes, probed: str | None) -> None:
    assert qemu_probe(head) == probed


@pytest.mark.parametrize("size", [1, 100, 511, 512, 4096])
def test_a_short_plain_file_is_still_accepted_as_raw(size: int) -> None:
    # Given a raw image of a few bytes that no prober takes for anything else
    data = (bytes(range(1, 256)) * 20)[:size]
    checker = ImageChecker(ImageCheckSettings(), "raw")
    # When it is checked
    checker.feed(data)
    verdict = checker.finish(checksum="0", os_hash_value="0")
    # Then it is a raw disk of that size
    assert (verdict.detected_format, verdict.size) == ("raw", size)


@pytest.mark.parametrize("size", [104, 511, 512, 1024, 70 * 1024])
def test_a_qcow2_header_declared_raw_is_refused_at_any_length(size: int) -> None:
    data = struct.pack(">4sIQI", b"QFI\xfb", 3, 0x100, 13).ljust(size, b"\0")
    checker = ImageChecker(ImageCheckSettings(), "raw")
    with pytest.raises(ImageRejected, match="qcow2"):
        checker.feed(data)
        checker.finish(checksum="0", os_hash_value="0")
