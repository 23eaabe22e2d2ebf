"""`process --jobs auto` (the default): one process per core only where the files' order
cannot matter (records to an output file, no handlers, enough input), else one."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from click.testing import CliRunner

from trailproc._cli import main
from trailproc._config import load_config
from trailproc._parallel import AUTO_MIN_BYTES, auto_jobs, usable_cores


def big_files(folder: Path, count: int) -> list[str]:
    """`count` gzip files of incompressible bytes, together over AUTO_MIN_BYTES."""
    folder.mkdir()
    each = AUTO_MIN_BYTES // count + 1
    paths = []
    for i in range(count):
        path = folder / f"part-{i}.json.gz"
        path.write_bytes(gzip.compress(os.urandom(each), compresslevel=0))
        paths.append(str(path))
    return paths


def test_auto_uses_every_core_for_enough_files_into_an_output_file(tmp_path: Path) -> None:
    files = big_files(tmp_path / "in", 8)
    config = load_config(output=str(tmp_path / "out.jsonl"))
    assert auto_jobs(files, config) == min(usable_cores(), 8)
    assert auto_jobs([str(tmp_path / "in")], config) == min(usable_cores(), 8)


def test_auto_keeps_one_process_where_order_or_state_may_matter(tmp_path: Path) -> None:
    files = big_files(tmp_path / "in", 4)
    out = str(tmp_path / "out.jsonl")
    assert auto_jobs(files, load_config(output="-")) == 1  # stdout: a pipe reads in order
    assert auto_jobs(files, load_config(output=out, handlers=["json:dumps"])) == 1
    assert auto_jobs(files, load_config()) == 1  # handlers only
    assert auto_jobs(files[:1], load_config(output=out)) == 1  # one file


def test_auto_keeps_one_process_for_little_input(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        body = json.dumps({"Records": [{"eventID": str(i)}]}).encode()
        (folder / f"f{i}.json.gz").write_bytes(gzip.compress(body))
    assert auto_jobs([str(folder)], load_config(output=str(tmp_path / "o"))) == 1


def test_jobs_option_takes_auto_or_a_positive_number(tmp_path: Path) -> None:
    log = tmp_path / "log.json.gz"
    log.write_bytes(gzip.compress(json.dumps({"Records": [{"eventID": "a"}]}).encode()))
    out = tmp_path / "out.jsonl"
    for jobs in ("auto", "AUTO", "1"):
        result = CliRunner().invoke(main, ["process", str(log), "--output", str(out),
                                           "--jobs", jobs])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert out.read_text().count("\n") == 1
    for bad in ("0", "many"):
        result = CliRunner().invoke(main, ["process", str(log), "--jobs", bad])
        assert result.exit_code == 2
        assert "--jobs" in result.output


def test_auto_counts_only_what_a_folder_run_reads(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    big_files(folder / ".git", 4)  # a hidden folder: never read
    (folder / ".cache.json.gz").write_bytes(os.urandom(AUTO_MIN_BYTES))  # a hidden file
    body = json.dumps({"Records": [{"eventID": "a"}]}).encode()
    (folder / "one.json.gz").write_bytes(gzip.compress(body))
    (folder / "two.json.gz").write_bytes(gzip.compress(body))
    config = load_config(output=str(tmp_path / "out.jsonl"))
    assert auto_jobs([str(folder)], config) == 1
    big_files(folder / "sub", 4)  # enough in a subfolder: it is read
    assert auto_jobs([str(folder)], config) == min(usable_cores(), 6)
