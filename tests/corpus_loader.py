"""Turn every file of the shared real-data corpus into a CloudTrail delivery envelope.

SOURCES.md names each file's shape; each shape has one rule to reach `{"Records": [...]}`.
The envelope embeds every record's original JSON text verbatim, so byte-level checks on
raw slices are possible for every shape.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import msgspec

RECORD_SHAPES = {
    "ENVELOPE", "ENVELOPE-GZ", "ARRAY", "SINGLE", "NDJSON", "LOOKUP-NDJSON",
    "CWL-SUBSCRIPTION", "EVENTBRIDGE-CT", "WRAPPER-SEKOIA", "WRAPPER-STREAMALERT",
}  # fmt: skip


@dataclass
class CorpusFile:
    path: Path
    shape: str
    expected: int  # records per SOURCES.md
    records: list[bytes]  # each record's JSON text, as found

    @property
    def envelope(self) -> bytes:
        return b'{"Records":[' + b",".join(self.records) + b"]}"


class _Detail(msgspec.Struct):
    detail: msgspec.Raw


class _Envelope(msgspec.Struct):
    Records: list[msgspec.Raw]


class _StreamAlertItem(msgspec.Struct):
    data: _Envelope


def _raws(buf: bytes) -> list[bytes]:
    return [bytes(r) for r in msgspec.json.decode(buf, type=list[msgspec.Raw])]


def _records(path: Path, shape: str) -> list[bytes]:
    data = path.read_bytes()
    if shape == "ENVELOPE-GZ":
        data = gzip.decompress(data)
    lines = [line for line in data.splitlines() if line.strip()]
    if shape in ("ENVELOPE", "ENVELOPE-GZ"):
        return [bytes(r) for r in msgspec.json.decode(data, type=_Envelope).Records]
    if shape == "ARRAY":
        return _raws(data)
    if shape == "SINGLE":
        return [data.strip()]
    if shape == "NDJSON":
        return [line.strip() for line in lines]
    if shape == "LOOKUP-NDJSON":
        return [json.loads(line)["CloudTrailEvent"].strip().encode() for line in lines]
    if shape == "CWL-SUBSCRIPTION":
        return [e["message"].strip().encode() for e in json.loads(data)["logEvents"]]
    if shape == "EVENTBRIDGE-CT":
        return [bytes(msgspec.json.decode(data, type=_Detail).detail)]
    if shape == "WRAPPER-SEKOIA":
        return [json.loads(data)["input"]["message"].strip().encode()]
    if shape == "WRAPPER-STREAMALERT":
        items = msgspec.json.decode(data, type=list[_StreamAlertItem])
        return [bytes(r) for item in items for r in item.data.Records]
    raise ValueError(f"not a record shape: {shape}")


def load_corpus(corpus_dir: Path) -> list[CorpusFile]:
    """Every record-bearing corpus file, as listed in SOURCES.md."""
    sources = (corpus_dir.parent / "SOURCES.md").read_text(encoding="utf-8")
    out = []
    for line in sources.splitlines():
        if not line.startswith("| real/"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 8:  # the per-source summary table, not the per-file one
            continue
        name, shape, count = cells[0], cells[5], cells[6]
        if shape not in RECORD_SHAPES:
            continue
        path = corpus_dir.parent / name
        out.append(CorpusFile(path, shape, int(count.split()[0]), _records(path, shape)))
    return out
