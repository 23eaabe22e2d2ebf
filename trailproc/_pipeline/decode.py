"""Stage 4: object bytes → raw record slices.

gzip is detected by its magic bytes (some HTTP stacks decompress transparently, and
users sometimes store plain JSON), decompression is capped so a gzip bomb fails one file
with bounded memory, and `Records` is split into the records' original bytes with msgspec
without building a single dict. Every other shape a file can have (bare arrays, single
records, NDJSON, EventBridge events, LookupEvents items, CloudWatch Logs documents as
Firehose writes them) is recognised by content in
`shapes`; this module keeps the fast path for CloudTrail's own delivery and tries it
first. The shape of each file is logged (debug for deliveries, info for the others).

Lenient, never silent:

- bytes after the last gzip member fail the file, except zero padding (gzip(1) only
  warns; a log file never has any, so they mean a damaged or altered object);
- a top-level key given twice (`{"Records": [...], "Records": [...]}`) fails the file:
  parsers disagree on which one counts;
- a lone UTF-16 surrogate escape (`"\\ud800"`) fails the file with a message saying so
  (msgspec reads it as "truncated"): it encodes no character, so no tool could read that
  record as text.

Speed notes (see benchmarks/README.md for the profiles behind them):

- gzip is inflated into one bytearray preallocated from the trailer's ISIZE (exact for
  CloudTrail's files), 8 MB of output per call: zlib's own growing output buffer ends
  every call with a join of its blocks, so one call for a whole 400 MB member peaked at
  twice the document; `max_length` is the cap, so a bomb stops at `max_bytes + 1` bytes;
- isal's zlib-compatible inflater (2-3x faster, a default dependency) is used when installed;
- the records stay `msgspec.Raw` views into the decompressed document (zero-copy);
- msgspec does not look inside the raw values, so the document's UTF-8 is checked
  separately: `bytes.isascii` (~7 GB/s) for the usual all-ASCII file, a chunked strict
  decode otherwise, so a corrupt file fails whole before any record is handed over;
- a repeated `Records` key is ruled out by arithmetic, not by a second parse: when the
  document is exactly `{"Records":[` + the records + commas + `]}` (CloudTrail's
  compact form), there is no byte left for another key. Only other layouts (pretty
  printed, extra keys) are parsed again to look for repeated keys.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Callable, Iterator
from typing import Any, cast

import msgspec

from .._errors import BadLogFile, DecompressedTooLarge
from .._observe import get_logger
from . import shapes

__all__ = [
    "BACKEND", "DELIVERY_SHAPE", "decode_log", "decode_log_lines", "decompress",
    "gzip_size_hint", "inflated_bound", "is_one_line", "split_document", "split_records",
]  # fmt: skip

log = get_logger("trailproc.decode")

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_MIN = 18  # header (10) + trailer (8)
_DEFLATE_MAX_RATIO = 1032
_IN_SLICE = 1 << 20
_OUT_SLICE = 8 << 20
UTF8_BOM = b"\xef\xbb\xbf"
DELIVERY_SHAPE = 'CloudTrail delivery ({"Records": [...]})'
_DELIVERY_HEAD = b'{"Records":['


def _make_decompressor() -> tuple[Callable[[], Any], tuple[type[BaseException], ...], str]:
    # isal's zlib-compatible API is 2-3x faster (a dependency; zlib where it is absent).
    try:
        from isal import isal_zlib

        # isal raises its own error class, which is not a zlib.error.
        errors = (zlib.error, cast(type[BaseException], isal_zlib.error))
        return lambda: isal_zlib.decompressobj(31), errors, "isal"
    except ImportError:  # pragma: no cover - tests/test_gunzip_backend.py, in a subprocess
        return lambda: zlib.decompressobj(31), (zlib.error,), "zlib"


_new_decompressor, _ERRORS, BACKEND = _make_decompressor()


def _too_large(max_bytes: int) -> DecompressedTooLarge:
    return DecompressedTooLarge(
        f"decompressed size exceeds max_decompressed_bytes={max_bytes} "
        "(gzip bomb or oversized file)"
    )


def gzip_size_hint(data: bytes | bytearray) -> int | None:
    """The gzip trailer's ISIZE: the last member's decompressed size mod 2**32.

    Only a hint: it is exact for CloudTrail's single-member files under 4 GiB, but a
    forged file, several members or trailing padding make it anything. None unless
    `data` is gzip."""
    if not data.startswith(GZIP_MAGIC) or len(data) < _GZIP_MIN:
        return None
    return int.from_bytes(data[-4:], "little")


def inflated_bound(data: bytes | bytearray) -> int:
    """The most `data` can inflate to: deflate's best case is 1032:1 (a 258-byte match in
    two bits), whatever the trailer says."""
    return _DEFLATE_MAX_RATIO * len(data) + (1 << 16)


def decompress(data: bytes | bytearray, *, max_bytes: int) -> bytes | bytearray:
    """Gunzip `data` (all members) if it is gzip, else return it; never exceed `max_bytes`.

    The output is inflated into one buffer preallocated from the gzip trailer's size
    hint, a bounded slice at a time: zlib's own output buffer would hold its blocks
    and then their join (twice the document) at the end of every call.
    """
    if not data.startswith(GZIP_MAGIC):
        if len(data) > max_bytes:
            raise DecompressedTooLarge(
                f"object is {len(data)} bytes, over max_decompressed_bytes={max_bytes}"
            )
        return data
    # A garbage trailer (a damaged file) must not make us zero-fill a huge buffer.
    out = bytearray(min(gzip_size_hint(data) or 0, max_bytes + 1, inflated_bound(data)))
    filled = 0
    remaining = memoryview(data)
    try:
        while True:
            d = _new_decompressor()
            filled = _inflate_member(d, remaining, out, filled, max_bytes)
            # Concatenated gzip members are legal. Slice the view instead of keeping
            # `unused_data` (a copy of the rest).
            remaining = remaining[len(remaining) - len(d.unused_data) :]
            if remaining[:2] != GZIP_MAGIC:
                break
    except _ERRORS as exc:
        out.clear()  # the traceback keeps this frame: not its output too
        raise BadLogFile(f"corrupt gzip data: {exc}") from exc
    except BaseException:
        out.clear()
        raise
    # Zero padding (some writers pad to a block size) is ignored, as gzip(1) does.
    if remaining and bytes(remaining).strip(b"\0"):
        raise BadLogFile(
            f"{len(remaining)} bytes of trailing data after the last gzip member (starting "
            f"{bytes(remaining[:8])!r}): a damaged or altered object"
        )
    if filled < len(out):
        del out[filled:]  # the hint was too large (several members, padding)
    return out


def _inflate_member(d: Any, data: memoryview, out: bytearray, filled: int, max_bytes: int) -> int:
    """Inflate one gzip member of `data` into `out` from `filled` on; the new fill."""
    for start in range(0, len(data), _IN_SLICE):
        # Bounded input slices: what zlib keeps as `unconsumed_tail` is a copy.
        pending: bytes | memoryview = data[start : start + _IN_SLICE]
        while not d.eof:
            # max_length caps each call: a bomb stops after max_bytes + 1 bytes.
            room = min(_OUT_SLICE, max_bytes + 1 - filled)
            chunk = d.decompress(pending, room)
            got = len(chunk)
            out[filled : filled + got] = chunk
            del chunk  # not alive while the next call builds its own
            filled += got
            if filled > max_bytes:
                raise _too_large(max_bytes)
            pending = d.unconsumed_tail
            if not pending and got < room:
                break  # this slice is used up: zlib needs more input
        if d.eof:
            return filled
    raise BadLogFile("truncated gzip data (unexpected end of stream)")


class _Envelope(msgspec.Struct):
    Records: list[msgspec.Raw]


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_UTF8_CHUNK = 1 << 20


def _check_utf8(document: bytes | bytearray) -> None:
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


def _fills_document(document: bytes | bytearray, records: list[msgspec.Raw]) -> bool:
    """True if `document` is exactly `{"Records":[` + records joined by commas + `]}`
    (+ trailing blanks): then it has no room for any other key."""
    if not document.startswith(_DELIVERY_HEAD):
        return False
    end = len(document)
    while end and document[end - 1] in b" \t\r\n":
        end -= 1
    used = len(_DELIVERY_HEAD) + 2 + sum(map(len, records)) + max(len(records) - 1, 0)
    return used == end


def _split_delivery(document: bytes | bytearray) -> list[msgspec.Raw] | None:
    """The records of a `{"Records": [...]}` document; None if it is another shape."""
    try:
        envelope = _envelope_decoder.decode(document)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None  # another shape (or invalid JSON): `shapes` says which
    except RecursionError:
        raise BadLogFile("log file is JSON nested too deeply to be CloudTrail's") from None
    _check_utf8(document)
    records = envelope.Records
    if not _fills_document(document, records):
        shapes.refuse_duplicate_keys(document)
    shapes.refuse_notification_records(records)
    # Raw keeps the exact bytes; a record must be a JSON object (msgspec strips the
    # whitespace around each value, so the first byte is the value's own).
    # (Raw exports the buffer protocol, which msgspec's stubs do not declare.)
    views: Iterator[memoryview[int]] = map(memoryview, cast(list[bytes], records))
    for index, view in enumerate(views):
        if view[0] != 0x7B:  # "{"
            raise BadLogFile(f"record {index} is not a JSON object")
    return records


def split_document(
    document: bytes | bytearray, *, max_bytes: int | None = None
) -> tuple[str, list[Any], bool]:
    """A decompressed file → (its shape's name, its records, whether the records are
    slices of `document`). Raises BadLogFile naming what was seen when no shape fits.

    With `max_bytes`, a document that is itself gzip (Firehose compressing CloudWatch
    Logs' gzip members once more) is decompressed once more, within the same cap."""
    if max_bytes is not None and document.startswith(GZIP_MAGIC):
        document = decompress(document, max_bytes=max_bytes)
    if document.startswith(UTF8_BOM):
        document = document[len(UTF8_BOM) :]
    records = _split_delivery(document)
    if records is not None:
        return DELIVERY_SHAPE, records, True
    try:
        return shapes.split_other(document, _check_utf8)
    except RecursionError:
        raise BadLogFile("log file is JSON nested too deeply to be CloudTrail's") from None


def split_records(document: bytes | bytearray) -> list[Any]:
    """The records of a decompressed file of any shape, as their original JSON."""
    return split_document(document)[1]


def records_of(
    document: bytes | bytearray, name: str | None = None, *, max_bytes: int | None = None
) -> tuple[list[Any], bool]:
    """(records, no record spans lines) of a decompressed file; its shape is logged."""
    shape, records, slices = split_document(document, max_bytes=max_bytes)
    if shape == DELIVERY_SHAPE:
        log.debug("file shape", shape=shape, file=name, records=len(records))
    else:
        log.info("file shape", shape=shape, file=name, records=len(records))
    # Records that are not slices (LookupEvents text) may hold line breaks of their own.
    return records, slices and is_one_line(document)


def decode_log(data: bytes, *, max_bytes: int) -> tuple[list[Any], int]:
    """Object bytes → (raw records, decompressed size). CPU-bound: run off the event loop."""
    document = decompress(data, max_bytes=max_bytes)
    return split_document(document, max_bytes=max_bytes)[1], len(document)


def is_one_line(document: bytes | bytearray) -> bool:
    """No CR or LF anywhere (two memchr scans): then no record can span lines."""
    return b"\n" not in document and b"\r" not in document


def decode_log_lines(
    data: bytes, *, max_bytes: int, name: str | None = None
) -> tuple[list[Any], int, bool]:
    """`decode_log` plus whether no record spans lines (see `records_of`)."""
    document = decompress(data, max_bytes=max_bytes)
    records, one_line = records_of(document, name, max_bytes=max_bytes)
    return records, len(document), one_line
