"""`process` in one process hands the files over in their order (a folder's files sorted
by path), to handlers and to the output: a large file first is finished before a small
one after it starts, however much faster the small one decodes. Real files, the real
pipeline, the real CLI for stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trailproc
from trailproc._pipeline.events import Event
from trailproc._sandbox import encode_log, make_records

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TRAILPROC_LOG_LEVEL": "warning"}


def _large_then_small(folder: Path) -> list[str]:
    """Files whose names sort large, small, large, small...; returns the file of each
    record, in the expected order."""
    folder.mkdir()
    expected: list[str] = []
    for index, count in enumerate((6_000, 3, 4_000, 1, 2_000, 2)):
        name = f"{index}-{'large' if count > 100 else 'small'}.json.gz"
        records = make_records(count, seed=index)
        for record in records:
            record["eventID"] = f"{name}/{record['eventID']}"
        (folder / name).write_bytes(encode_log(records))
        expected += [name] * count
    return expected


def _runs(names: list[str]) -> list[str]:
    """Consecutive runs: ['a', 'a', 'b', 'a'] -> ['a', 'b', 'a']."""
    return [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]


def test_handlers_get_the_files_in_order(tmp_path: Path) -> None:
    expected = _large_then_small(tmp_path / "logs")
    seen: list[str] = []

    class Recorder(trailproc.EventProcessor):
        def process(self, events: list[Event]) -> None:
            seen.extend(event.to_dict()["eventID"].split("/")[0] for event in events)

    result = trailproc.process_paths([tmp_path / "logs"], Recorder(), max_events_per_emit=500)
    assert result.files_ok == 6 and result.files_failed == 0
    assert _runs(seen) == _runs(expected)
    assert seen == expected


def test_stdout_gets_the_files_in_order(tmp_path: Path) -> None:
    expected = _large_then_small(tmp_path / "logs")
    done = subprocess.run(
        [sys.executable, "-m", "trailproc", "process", str(tmp_path / "logs"), "--output", "-"],
        env=ENV, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    names = [json.loads(line)["eventID"].split("/")[0] for line in done.stdout.splitlines()]
    assert names == expected
