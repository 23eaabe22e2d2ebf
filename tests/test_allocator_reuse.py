"""`process` keeps the memory it frees for the next file (glibc's malloc thresholds, see
`trailproc._allocator`): a second pass over the same files takes a fraction of the page
faults it takes with glibc's adaptive defaults. Each side runs in its own interpreter,
so this test process's allocator is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trailproc._allocator import _on_glibc
from trailproc._sandbox import encode_log, make_records

REPO = Path(__file__).resolve().parent.parent

_SECOND_PASS = """
import resource, sys
import trailproc
from trailproc._allocator import reuse_freed_memory

if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
def one_pass():
    trailproc.process_paths([sys.argv[2]], output=sys.argv[3], checkpoint="memory",
                            log_level="warning")
one_pass()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
one_pass()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(not _on_glibc(), reason="glibc's malloc settings only")


def _second_pass_faults(mode: str, folder: Path, out: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _SECOND_PASS, mode, str(folder), str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    return int(done.stdout.split()[-1])


def test_freed_memory_is_reused_for_the_next_files(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    records = make_records(2000, seed=1)  # ~2.8 MB decompressed per file
    for index in range(6):
        (folder / f"{index}.json.gz").write_bytes(encode_log(records))
    out = tmp_path / "out.jsonl"
    adaptive = _second_pass_faults("adaptive", folder, out)
    reused = _second_pass_faults("reuse", folder, out)
    pages = out.stat().st_size // 4096  # the pass's documents and output, in pages
    # Untuned, each file's document buffer is faulted in afresh: ~1,300 faults for 4,170
    # pages on a quiet machine (~9,000 when inflating took 8 MB slices).
    assert adaptive > pages // 8, (adaptive, pages)
    # Tuned, the second pass reuses what the first freed: single digits when quiet, a
    # few hundred when other work moves its threads to other malloc arenas.
    assert reused < pages // 4 and reused < adaptive, (reused, adaptive, pages)
