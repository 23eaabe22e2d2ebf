"""Stage 4: object bytes → raw record slices.

Decompression is `gunzip`'s (capped, by magic bytes). `Records` is split into the
records' original bytes with msgspec without building a single dict. Every other shape a
file can have (bare arrays, single records, NDJSON, EventBridge events, LookupEvents
items, CloudWatch Logs documents as Firehose writes them) is recognised by content in
`shapes`; this module keeps the fast path for CloudTrail's own delivery and tries it
first. The shape of each file is logged (debug for deliveries, info for the others).

Lenient, never silent:

- a top-level key given twice (`{"Records": [...], "Records": [...]}`) fails the file:
  parsers disagree on which one counts;
- a lone UTF-16 surrogate escape (`"\\ud800"`) fails the file with a message saying so
  (msgspec reads it as "truncated"): it encodes no character, so no tool could read that
  record as text.

Speed notes (see benchmarks/README.md for the profiles behind them):

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
from collections.abc import Iterator
from typing import Any, cast

import msgspec

from .._errors import BadLogFile
from .._observe import get_logger
from . import shapes
from .gunzip import GZIP_MAGIC, decompress

__all__ = [
    "DELIVERY_SHAPE", "OtherShape", "decode_log", "decode_log_lines", "delivery_record_count",
    "is_one_line", "split_document", "split_records",
]  # fmt: skip

log = get_logger("trailproc.decode")
UTF8_BOM = b"\xef\xbb\xbf"
DELIVERY_SHAPE = 'CloudTrail delivery ({"Records": [...]})'
_DELIVERY_HEAD = b'{"Records":['


class _Envelope(msgspec.Struct):
    Records: list[msgspec.Raw]


_envelope_decoder = msgspec.json.Decoder(_Envelope)


class _AnObject(msgspec.Struct, gc=False):
    """Any JSON object, its members skipped: a few bytes each."""


class _Objects(msgspec.Struct):
    Records: list[_AnObject]


_objects_decoder = msgspec.json.Decoder(_Objects)
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


def delivery_record_count(document: bytes | bytearray) -> int | None:
    """How many records a `{"Records": [...]}` document holds, checking on the way that
    each is a JSON object, while holding a few bytes per record instead of a record's
    cost; None for a document of another shape. A record that is not an object fails
    the file at once: so the records are at most the document's count of "{"."""
    view = memoryview(document)
    if document.startswith(UTF8_BOM):
        view = view[len(UTF8_BOM) :]  # a view: no copy of a large document
    try:
        return len(_objects_decoder.decode(view).Records)
    except msgspec.ValidationError as exc:
        if "$.Records[" in str(exc):  # msgspec names the offending element's path
            raise BadLogFile(f"a record is not a JSON object ({exc})") from None
        return None
    except (msgspec.DecodeError, RecursionError):
        return None


def split_document(
    document: bytes | bytearray, *, max_bytes: int | None = None, other_shapes: bool = True
) -> tuple[str, list[Any], bool]:
    """A decompressed file → (its shape's name, its records, whether the records are
    slices of `document`). Raises BadLogFile naming what was seen when no shape fits.

    With `max_bytes`, a document that is itself gzip (Firehose compressing CloudWatch
    Logs' gzip members once more) is decompressed once more, within the same cap.
    Without `other_shapes`, only CloudTrail's delivery is read: anything else raises
    `OtherShape` before any of its records is built."""
    if not other_shapes and document.startswith(GZIP_MAGIC):
        raise OtherShape
    if max_bytes is not None and document.startswith(GZIP_MAGIC):
        document = decompress(document, max_bytes=max_bytes)
    if document.startswith(UTF8_BOM):
        document = document[len(UTF8_BOM) :]
    records = _split_delivery(document)
    if records is not None:
        return DELIVERY_SHAPE, records, True
    if not other_shapes:
        raise OtherShape
    try:
        return shapes.split_other(document, _check_utf8)
    except RecursionError:
        raise BadLogFile("log file is JSON nested too deeply to be CloudTrail's") from None


def split_records(document: bytes | bytearray) -> list[Any]:
    """The records of a decompressed file of any shape, as their original JSON."""
    return split_document(document)[1]


class OtherShape(Exception):
    """The document is not CloudTrail's delivery (`split_document(other_shapes=False)`)."""


def records_of(
    document: bytes | bytearray,
    name: str | None = None,
    *,
    max_bytes: int | None = None,
    other_shapes: bool = True,
) -> tuple[list[Any], bool]:
    """(records, no record spans lines) of a decompressed file; its shape is logged.
    Raises `OtherShape` for a file of another shape without `other_shapes`."""
    shape, records, slices = split_document(
        document, max_bytes=max_bytes, other_shapes=other_shapes
    )
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
