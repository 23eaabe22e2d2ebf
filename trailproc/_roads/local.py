"""The local source: log files or folders on disk, for `trailproc process` (no AWS).

Files are read by content, whatever their names: a folder's `.log`, `.raw`, `.jsonl` and
extension-less files are read like `.json.gz` ones, and the decoder tells their shape.
Inside a folder, hidden entries (a name starting with ".") and files that are obviously
binary without being gzip (a NUL byte in their first KiB) are skipped; each is reported
through `skipped`, so the caller can name it. A file named on the command line is always
read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._pipeline.keys import FileRef, KeyInfo, ObjectKind, classify_key

__all__ = ["SkippedFile", "local_refs"]

_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 1024


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file (or folder) inside a given folder that was not read, and why."""

    path: str
    reason: str


def _binary_reason(path: Path) -> str | None:
    """Why `path` is not worth reading, or None: gzip and text files are read."""
    try:
        with path.open("rb") as file:
            head = file.read(_SNIFF_BYTES)
    except OSError:
        return None  # read (and reported as failed) by the pipeline
    if head.startswith(_GZIP_MAGIC) or b"\0" not in head:
        return None
    return "binary file (not gzip, not text)"


def _folder_files(folder: Path, skipped: list[SkippedFile] | None) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        for name in sorted(dirs):
            if name.startswith("."):
                dirs.remove(name)  # not walked into
                if skipped is not None:
                    skipped.append(SkippedFile(Path(root, name).as_posix(), "hidden folder"))
        for name in names:
            path = Path(root, name)
            if name.startswith("."):
                reason: str | None = "hidden file"
            elif not path.is_file():
                reason = "not a regular file"
            else:
                reason = _binary_reason(path)
            if reason is None:
                files.append(path)
            elif skipped is not None:
                skipped.append(SkippedFile(path.as_posix(), reason))
    return sorted(files)


def local_refs(
    paths: Iterable[str | os.PathLike[str]], skipped: list[SkippedFile] | None = None
) -> Iterator[FileRef]:
    """File references for each file, and each file below each folder, sorted.

    The key is the path; when the path mirrors the bucket layout (AWSLogs/...), account,
    region and date are parsed from it like from an S3 key. What a folder holds but is
    not read is appended to `skipped`.
    """
    for path in map(Path, paths):
        files = _folder_files(path, skipped) if path.is_dir() else [path]
        for file in files:
            text = file.as_posix()
            info = classify_key(text)
            if info.kind is ObjectKind.OTHER:
                info = KeyInfo(ObjectKind.LOG)  # the user named it: treat it as a log file
            yield FileRef(bucket="", key=text, info=info)
