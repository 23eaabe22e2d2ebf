"""Capped gunzip: the bytes of a gzip object, never more than `max_bytes` of them.

gzip is detected by its magic bytes (some HTTP stacks decompress transparently, and
users sometimes store plain JSON). A gzip bomb fails one file with bounded memory:
`max_length` caps every inflate call, so a bomb stops at `max_bytes + 1` bytes. The
output is one bytearray preallocated from the trailer's ISIZE (exact for CloudTrail's
files), filled 1 MB per call: zlib's own growing output buffer ends every call with a
join of its blocks, so one call for a whole 400 MB member peaked at twice the document.
isal's zlib-compatible inflater (2-3x faster, a default dependency) is used when
installed. Bytes after the last member fail the object, except zero padding.

`gunzip_stream` is the exact, streaming form used to hash log files against their
digests (`trailproc validate`): chunks in, plain chunks out, with bounded memory; gzip
or nothing (`NotGzipError`), every member, zero padding after the last one ignored.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, cast

from .._errors import BadLogFile, DecompressedTooLarge

__all__ = [
    "BACKEND",
    "GZIP_MAGIC",
    "NotGzipError",
    "decompress",
    "gunzip_exact",
    "gunzip_stream",
    "gzip_size_hint",
    "inflated_bound",
]

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_MIN = 18  # header (10) + trailer (8)
_DEFLATE_MAX_RATIO = 1032
_IN_SLICE = 1 << 20
# 1 MB of output per call: a larger slice is a fresh allocation the size of the slice
# on every call (mmapped and page-faulted when glibc's thresholds are not raised): 8 MB
# slices took 9.6 ms for a 6.7 MB document where 1 MB slices take 3.4 ms.
_OUT_SLICE = 1 << 20


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


# --- exact and streaming -----------------------------------------------------------------


class NotGzipError(ValueError):
    """The bytes are not a (complete, well-formed) gzip stream."""


class _Members:
    """Inflates a stream of gzip members fed in chunks of any size."""

    def __init__(self) -> None:
        self.member: Any = None  # the current member's decompressor
        self.members = 0  # members inflated to their end
        self.held = b""  # the start of a member too short to tell its magic bytes yet
        self.padding = False  # past the last member, in zero padding

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self.member is None:
                data = self._start(self.held + data)
                if not data:
                    return
            data = yield from self._inflate(data)

    def _start(self, data: bytes) -> bytes:
        """A new member begins with `data`; returns what to inflate (b"": wait for more)."""
        self.held = b""
        if self.padding or (self.members and data[:1] == b"\0"):
            self.padding = True
            if data.strip(b"\0"):
                raise NotGzipError("data after zero padding past the last gzip member")
            return b""
        if len(data) < len(GZIP_MAGIC):
            self.held = data
            return b""
        if data[: len(GZIP_MAGIC)] != GZIP_MAGIC:
            if self.members:
                raise NotGzipError("trailing data after the last gzip member")
            raise NotGzipError("no gzip magic bytes")
        self.member = _new_decompressor()
        return data

    def _inflate(self, data: bytes) -> Generator[bytes, None, bytes]:
        """Inflate into the current member, a bounded slice per call (a bomb never sits
        in memory whole); returns the bytes after the member's end."""
        while True:
            out = self.member.decompress(data, _OUT_SLICE)
            if out:
                yield out
            if self.member.eof:
                rest: bytes = self.member.unused_data
                self.member = None
                self.members += 1
                return rest
            data = self.member.unconsumed_tail
            if not data and len(out) < _OUT_SLICE:
                return b""

    def finish(self) -> Iterator[bytes]:
        if self.member is not None:
            tail = self.member.flush()
            if tail:
                yield tail
            if not self.member.eof:
                raise NotGzipError("truncated gzip stream")
            self.members += 1
        if self.held:
            raise NotGzipError("truncated gzip stream")
        if self.members == 0:
            raise NotGzipError("empty object")


def gunzip_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The plain bytes of a gzip stream given in chunks, exactly: every member in order,
    zero padding after the last one ignored (as `decompress` and gzip(1) do).
    `NotGzipError` for anything else: no gzip magic, corrupt or truncated data, other
    bytes after the last member, nothing at all."""
    members = _Members()
    try:
        for chunk in chunks:
            yield from members.feed(bytes(chunk))
        yield from members.finish()
    except _ERRORS as exc:
        raise NotGzipError(str(exc)) from exc


def gunzip_exact(data: bytes, *, max_bytes: int | None = None) -> bytes:
    """`gunzip_stream` of bytes in hand; `DecompressedTooLarge` past `max_bytes`."""
    parts: list[bytes] = []
    total = 0
    for chunk in gunzip_stream([data]):
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            parts.clear()
            raise _too_large(max_bytes)
        parts.append(chunk)
    return b"".join(parts)
