"""The local source: log files or folders on disk, for `trailproc process` (no AWS)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..pipeline.keys import FileRef, KeyInfo, ObjectKind, classify_key

__all__ = ["local_refs"]

_SUFFIXES = (".json.gz", ".json", ".gz")


def local_refs(paths: Iterable[str | os.PathLike[str]]) -> Iterator[FileRef]:
    """File references for each file, and each `*.json[.gz]` below each folder, sorted.

    The key is the path; when the path mirrors the bucket layout (AWSLogs/...), account,
    region and date are parsed from it like from an S3 key.
    """
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))
        else:
            files = [path]
        for file in files:
            text = file.as_posix()
            info = classify_key(text)
            if info.kind is ObjectKind.OTHER:
                info = KeyInfo(ObjectKind.LOG)  # the user named it: treat it as a log file
            yield FileRef(bucket="", key=text, info=info)
