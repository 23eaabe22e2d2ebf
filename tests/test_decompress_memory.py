"""decompress() holds one copy of the document: it inflates into a buffer preallocated
from the gzip trailer's size hint, and stays right when that hint is wrong (several
members, padding after the last one, a forged trailer)."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import pytest

from trailproc._errors import BadLogFile, DecompressedTooLarge
from trailproc._pipeline import gunzip
from trailproc._pipeline.decode import split_records
from trailproc._pipeline.gunzip import decompress, gzip_size_hint


def _document(size: int) -> bytes:
    record = json.dumps({"eventVersion": "1.08", "eventName": "GetObject",
                         "requestParameters": {"key": "x" * 900}}).encode()  # fmt: skip
    count = size // (len(record) + 1)
    return b'{"Records":[' + b",".join([record] * count) + b"]}"


@pytest.mark.parametrize("backend", ["installed", "zlib"])
def test_a_large_document_is_held_once_while_inflating(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "zlib":  # the inflater of an install without isal
        monkeypatch.setattr(gunzip, "_new_decompressor", lambda: zlib.decompressobj(31))
    document = _document(64 << 20)
    data = gzip.compress(document, compresslevel=1)
    tracemalloc.start()
    try:
        out = decompress(data, max_bytes=1 << 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out == document
    # One document plus one 1 MB output slice and its join; zlib's single call used
    # to hold its output blocks and their join: twice the document.
    assert peak < len(document) * 1.45, f"peak {peak / 2**20:.0f} MB for a 64 MB document"


def test_several_members_inflate_beyond_the_last_members_hint() -> None:
    first, second = _document(3 << 20), b'{"Records":[]}'
    data = gzip.compress(first) + gzip.compress(second)
    assert gzip_size_hint(data) == len(second)
    assert decompress(data, max_bytes=1 << 30) == first + second


def test_a_forged_trailer_does_not_change_the_output() -> None:
    document = _document(1 << 20)
    data = bytearray(gzip.compress(document))
    for forged in (1, 0xFFFFFFFF):
        data[-4:] = forged.to_bytes(4, "little")
        # zlib checks the trailer: a forged size is a corrupt file, not a wrong output.
        with pytest.raises(BadLogFile, match="corrupt gzip"):
            decompress(bytes(data), max_bytes=1 << 30)


def test_zero_padding_after_the_last_member_is_ignored() -> None:
    document = _document(1 << 20)
    data = gzip.compress(document) + b"\0" * 64
    assert gzip_size_hint(data) == 0
    out = decompress(data, max_bytes=1 << 30)
    assert out == document
    assert len(split_records(out)) == document.count(b"eventVersion")


def test_a_bomb_stops_at_the_cap_whatever_its_trailer_says() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = compressor.compress(b"\0" * (64 << 20)) + compressor.flush()
    assert gzip_size_hint(bomb) == 64 << 20
    with pytest.raises(DecompressedTooLarge, match="max_decompressed_bytes=1048576"):
        decompress(bomb, max_bytes=1 << 20)


def test_a_truncated_member_still_fails_as_truncated() -> None:
    data = gzip.compress(_document(1 << 20))
    with pytest.raises(BadLogFile, match="truncated"):
        decompress(data[: len(data) // 2], max_bytes=1 << 30)


def test_plain_json_is_returned_as_is() -> None:
    document = _document(1 << 16)
    assert decompress(document, max_bytes=1 << 30) is document
    assert gzip_size_hint(document) is None
