"""The exact, streaming gunzip (`gunzip_stream`, used to hash log files against their
digests): every member in order, zero padding ignored, anything else refused, whatever
the chunk boundaries, with bounded output per step; on isal and on the stdlib's zlib."""

from __future__ import annotations

import datetime as dt
import gzip
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from trailproc._errors import DecompressedTooLarge
from trailproc._pipeline import gunzip
from trailproc._pipeline.gunzip import NotGzipError, decompress, gunzip_exact, gunzip_stream

PLAIN = b'{"Records":[{"eventID":"1"}]}\n' * 2000 + random.Random(16).randbytes(5000)
ONE = gzip.compress(PLAIN)
TWO = gzip.compress(b"first member;") + gzip.compress(b"second member")


@pytest.fixture(params=["default", "zlib"], autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "zlib":
        monkeypatch.setattr(gunzip, "_new_decompressor", lambda: zlib.decompressobj(31))
        monkeypatch.setattr(gunzip, "_ERRORS", (zlib.error,))
    return str(request.param)


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("size", [1, 2, 7, 4096, 1 << 30])
def test_every_member_in_order_whatever_the_chunks(size: int) -> None:
    assert b"".join(gunzip_stream(pieces(ONE, size))) == PLAIN
    assert b"".join(gunzip_stream(pieces(TWO, size))) == b"first member;second member"
    empty_members = gzip.compress(b"") + gzip.compress(b"x") + gzip.compress(b"")
    assert b"".join(gunzip_stream(pieces(empty_members, size))) == b"x"


@pytest.mark.parametrize("size", [1, 3, 1 << 30])
def test_zero_padding_after_the_last_member_is_ignored_as_decompress_does(size: int) -> None:
    padded = TWO + b"\0" * 512
    assert b"".join(gunzip_stream(pieces(padded, size))) == bytes(
        decompress(padded, max_bytes=1 << 20)
    )
    assert gunzip_exact(ONE + b"\0") == PLAIN


@pytest.mark.parametrize(
    "tail",
    [b"junk", b"\0\0\0junk", b"\x1f", b"\x1f\x8b", b"\x1f\x8bnot a member at all"],
    ids=["junk", "junk-after-padding", "half-magic", "bare-magic", "magic-then-junk"],
)
@pytest.mark.parametrize("size", [1, 5, 1 << 30])
def test_other_bytes_after_the_last_member_are_refused(tail: bytes, size: int) -> None:
    with pytest.raises(NotGzipError):
        b"".join(gunzip_stream(pieces(ONE + tail, size)))


@pytest.mark.parametrize("cut", [1, 4, 8, 9, 100, len(ONE) // 2, len(ONE) - 11])
def test_a_truncated_stream_is_refused(cut: int) -> None:
    for size in (1 << 30, 64):
        with pytest.raises(NotGzipError):
            b"".join(gunzip_stream(pieces(ONE[:-cut], size)))
    with pytest.raises(NotGzipError):  # the second member cut short
        gunzip_exact(TWO[:-3])


def test_not_gzip_is_refused_with_a_reason() -> None:
    with pytest.raises(NotGzipError, match="no gzip magic"):
        gunzip_exact(b'{"Records":[]}')
    with pytest.raises(NotGzipError, match="empty"):
        gunzip_exact(b"")
    with pytest.raises(NotGzipError):
        gunzip_exact(b"\x1f")
    corrupt = bytearray(ONE)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(NotGzipError):
        gunzip_exact(bytes(corrupt))
    wrong_crc = ONE[:-8] + bytes([ONE[-8] ^ 1]) + ONE[-7:]
    with pytest.raises(NotGzipError):
        gunzip_exact(wrong_crc)


def test_a_bomb_comes_out_in_bounded_slices() -> None:
    size = 48 << 20
    bomb = gzip.compress(b"\0" * size, compresslevel=1)
    total = largest = 0
    for chunk in gunzip_stream(pieces(bomb, 1 << 20)):
        total += len(chunk)
        largest = max(largest, len(chunk))
    assert total == size
    assert largest <= gunzip._OUT_SLICE


def test_gunzip_exact_stops_past_its_cap() -> None:
    assert gunzip_exact(ONE, max_bytes=len(PLAIN)) == PLAIN
    with pytest.raises(DecompressedTooLarge):
        gunzip_exact(ONE, max_bytes=len(PLAIN) - 1)


def test_a_digest_inflating_past_the_cap_is_invalid_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trailproc.integrity import Status, _validator, validate
    from trailproc.integrity._testing import DigestChainSigner, new_private_key

    monkeypatch.setattr(_validator, "MAX_DIGEST_BYTES", 1 << 20)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    signer = DigestChainSigner(new_private_key(), bucket="b", sink=tmp_path, trail_name="t")
    digests = signer.run_hours(start, 2)
    (tmp_path / digests[1].key).write_bytes(gzip.compress(b" " * (2 << 20)))
    report = validate("arn:aws:cloudtrail:us-east-1:123456789012:trail/t", "b", start,
                      start + dt.timedelta(hours=2), local_dir=tmp_path,
                      public_keys=[signer.public_key_pem()])  # fmt: skip
    statuses = {r.key: (r.status, r.message) for r in report.digests}
    assert statuses[digests[1].key] == (
        Status.INVALID_FORMAT,
        "INVALID: invalid format (over 1 MiB decompressed)",
    )
