"""Stage 4: object bytes → raw record slices.

gzip is detected by its magic bytes (some HTTP stacks decompress transparently, and
users sometimes store plain JSON), decompression is capped so a gzip bomb fails one file
with bounded memory, and `Records` is split into the records' original bytes with msgspec
without building a single dict.

Speed notes (see benchmarks/README.md for the profiles behind them):

- each gzip member is inflated by one `decompress(data, max_length)` call: the output
  buffer grows inside the C library and is returned as is, with no Python-level chunk
  copies and no final `bytes(bytearray)` copy; `max_length` is the cap, so a bomb still
  stops at `max_bytes + 1` bytes;
- with the `fast` extra, isal's zlib-compatible inflater (2-3x faster) is used;
- the records stay `msgspec.Raw` views into the decompressed document (zero-copy);
- msgspec does not look inside the raw values, so the document's UTF-8 is checked
  separately: `bytes.isascii` (~7 GB/s) for the usual all-ASCII file, a chunked strict
  decode otherwise, so a corrupt file fails whole before any record is handed over.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Callable, Iterator
from typing import Any, cast

import msgspec

from ..errors import BadLogFile, DecompressedTooLarge

__all__ = [
    "BACKEND", "decode_log", "decode_log_lines", "decompress", "is_one_line", "split_records",
]  # fmt: skip

GZIP_MAGIC = b"\x1f\x8b"


def _make_decompressor() -> tuple[Callable[[], Any], tuple[type[BaseException], ...], str]:
    # isal's zlib-compatible API is 2-3x faster; optional (the `fast` extra).
    try:
        from isal import isal_zlib

        # isal raises its own error class, which is not a zlib.error.
        errors = (zlib.error, cast(type[BaseException], isal_zlib.error))
        return lambda: isal_zlib.decompressobj(31), errors, "isal"
    except ImportError:  # pragma: no cover - depends on the extra
        return lambda: zlib.decompressobj(31), (zlib.error,), "zlib"


_new_decompressor, _ERRORS, BACKEND = _make_decompressor()


def _too_large(max_bytes: int) -> DecompressedTooLarge:
    return DecompressedTooLarge(
        f"decompressed size exceeds max_decompressed_bytes={max_bytes} "
        "(gzip bomb or oversized file)"
    )


def decompress(data: bytes, *, max_bytes: int) -> bytes:
    """Gunzip `data` (all members) if it is gzip, else return it; never exceed `max_bytes`."""
    if not data.startswith(GZIP_MAGIC):
        if len(data) > max_bytes:
            raise DecompressedTooLarge(
                f"object is {len(data)} bytes, over max_decompressed_bytes={max_bytes}"
            )
        return data
    parts: list[bytes] = []
    total = 0
    remaining = memoryview(data)
    try:
        while True:
            d = _new_decompressor()
            # max_length caps what this member may produce: a bomb stops after
            # max_bytes + 1 bytes of output instead of inflating all of it.
            out = d.decompress(remaining, max_bytes - total + 1)
            total += len(out)
            if total > max_bytes:
                raise _too_large(max_bytes)
            if not d.eof:
                raise BadLogFile("truncated gzip data (unexpected end of stream)")
            parts.append(out)
            # Concatenated gzip members are legal; anything after the last is padding.
            # Slice the view instead of keeping `unused_data` (a copy of the rest).
            remaining = remaining[len(remaining) - len(d.unused_data) :]
            if remaining[:2] != GZIP_MAGIC:
                break
    except _ERRORS as exc:
        raise BadLogFile(f"corrupt gzip data: {exc}") from exc
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Envelope(msgspec.Struct):
    Records: list[msgspec.Raw]


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_UTF8_CHUNK = 1 << 20


def _check_utf8(document: bytes) -> None:
    """Raise BadLogFile unless `document` is valid UTF-8 (as JSON must be)."""
    if document.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(document)
    # In chunks: a full decode would hold a str as large as the document.
    for start in range(0, len(view), _UTF8_CHUNK):
        try:
            decoder.decode(view[start : start + _UTF8_CHUNK])
        except UnicodeDecodeError as exc:
            raise BadLogFile(
                f"log file is not valid UTF-8 (byte {start + exc.start}: {exc.reason})"
            ) from None
    # No final flush needed: msgspec accepted the JSON, so it ends with ASCII.


def split_records(document: bytes) -> list[msgspec.Raw]:
    """Split `{"Records": [...]}` into the records' raw JSON (zero-copy views)."""
    try:
        envelope = _envelope_decoder.decode(document)
    except msgspec.ValidationError as exc:
        raise BadLogFile(f"not a CloudTrail log file: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadLogFile(f"log file is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BadLogFile("log file is JSON nested too deeply to be CloudTrail's") from None
    _check_utf8(document)
    records = envelope.Records
    # Raw keeps the exact bytes; a record must be a JSON object (msgspec strips the
    # whitespace around each value, so the first byte is the value's own).
    # (Raw exports the buffer protocol, which msgspec's stubs do not declare.)
    views: Iterator[memoryview[int]] = map(memoryview, cast(list[bytes], records))
    for index, view in enumerate(views):
        if view[0] != 0x7B:  # "{"
            raise BadLogFile(f"record {index} is not a JSON object")
    return records


def decode_log(data: bytes, *, max_bytes: int) -> tuple[list[msgspec.Raw], int]:
    """Object bytes → (raw records, decompressed size). CPU-bound: run off the event loop."""
    document = decompress(data, max_bytes=max_bytes)
    return split_records(document), len(document)


def is_one_line(document: bytes) -> bool:
    """No CR or LF anywhere (two memchr scans): then no record can span lines."""
    return b"\n" not in document and b"\r" not in document


def decode_log_lines(data: bytes, *, max_bytes: int) -> tuple[list[msgspec.Raw], int, bool]:
    """`decode_log` plus `is_one_line` of the decompressed document."""
    document = decompress(data, max_bytes=max_bytes)
    return split_records(document), len(document), is_one_line(document)
