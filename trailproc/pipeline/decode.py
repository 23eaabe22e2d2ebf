"""Stage 4: object bytes → raw record slices.

gzip is detected by its magic bytes (some HTTP stacks decompress transparently, and
users sometimes store plain JSON), decompression is capped so a gzip bomb fails one file
with bounded memory, and `Records` is split into the records' original bytes with msgspec
without building a single dict.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import msgspec

from ..errors import BadLogFile, DecompressedTooLarge

__all__ = ["decompress", "split_records", "decode_log"]

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _make_decompressor() -> Callable[[], zlib._Decompress]:
    # isal's zlib-compatible API is 2-3x faster; optional (`pip install trailproc[fast]`).
    try:
        from isal import isal_zlib

        return lambda: isal_zlib.decompressobj(31)  # type: ignore[no-any-return]
    except ImportError:  # pragma: no cover - depends on the extra
        return lambda: zlib.decompressobj(31)


_new_decompressor = _make_decompressor()


def decompress(data: bytes, *, max_bytes: int) -> bytes:
    """Gunzip `data` (all members) if it is gzip, else return it; never exceed `max_bytes`."""
    if not data.startswith(GZIP_MAGIC):
        if len(data) > max_bytes:
            raise DecompressedTooLarge(
                f"object is {len(data)} bytes, over max_decompressed_bytes={max_bytes}"
            )
        return data
    out = bytearray()
    remaining = memoryview(data)
    try:
        while remaining:
            d = _new_decompressor()
            # Feed in bounded steps: max_length caps how much one call may produce, so a
            # bomb is caught after at most max_bytes + one chunk, not after inflating all.
            chunk = d.decompress(remaining, _CHUNK)
            while True:
                out += chunk
                if len(out) > max_bytes:
                    raise DecompressedTooLarge(
                        f"decompressed size exceeds max_decompressed_bytes={max_bytes} "
                        "(gzip bomb or oversized file)"
                    )
                if d.eof or not d.unconsumed_tail:
                    break
                chunk = d.decompress(d.unconsumed_tail, _CHUNK)
            if not d.eof:
                raise BadLogFile("truncated gzip data (unexpected end of stream)")
            # Concatenated gzip members are legal; anything after the last is padding.
            remaining = memoryview(d.unused_data)
            if remaining and remaining[:2] != GZIP_MAGIC:
                break
    except zlib.error as exc:
        raise BadLogFile(f"corrupt gzip data: {exc}") from exc
    return bytes(out)


class _Envelope(msgspec.Struct):
    Records: list[msgspec.Raw]


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def split_records(document: bytes) -> list[msgspec.Raw]:
    """Split `{"Records": [...]}` into the records' raw JSON (zero-copy views)."""
    try:
        envelope = _envelope_decoder.decode(document)
    except msgspec.ValidationError as exc:
        raise BadLogFile(f"not a CloudTrail log file: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadLogFile(f"log file is not valid JSON: {exc}") from exc
    for index, raw in enumerate(envelope.Records):
        # Raw keeps the exact bytes; a record must be a JSON object.
        if memoryview(raw)[:1] != b"{":
            raise BadLogFile(f"record {index} is not a JSON object")
    return envelope.Records


def decode_log(data: bytes, *, max_bytes: int) -> tuple[list[msgspec.Raw], int]:
    """Object bytes → (raw records, decompressed size). CPU-bound: run off the event loop."""
    document = decompress(data, max_bytes=max_bytes)
    return split_records(document), len(document)
