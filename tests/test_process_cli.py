"""`trailproc process` as a Unix tool: folders read by content, a summary naming every
file skipped or failed, --output replaced unless --append, whole batches only, and quiet
ends in pipes. Real files and real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from trailproc._cli import main
from trailproc._sandbox import TrailSandbox, encode_log, make_records

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TRAILPROC_LOG_LEVEL": "warning"}


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["eventID"] for line in path.read_bytes().splitlines()]


def _folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder of log files under every name the old reader skipped, plus what a folder
    should not have read."""
    folder = tmp_path / "logs"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    records = make_records(30, seed=4)
    (folder / "a.json.gz").write_bytes(encode_log(records[:10]))
    (folder / "b.log").write_bytes(b"\n".join(json.dumps(r).encode() for r in records[10:15]))
    (folder / "sub" / "c.raw").write_bytes(json.dumps(records[15]).encode())
    (folder / "sub" / "d.jsonl").write_bytes(
        b"\n".join(json.dumps(r).encode() for r in records[16:30]) + b"\n"
    )
    (folder / ".git" / "HEAD").write_bytes(encode_log(records))  # never read
    (folder / ".hidden.json").write_bytes(encode_log(records))  # never read
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "notes.txt").write_bytes(b"not a log\n")
    return folder, [r["eventID"] for r in records]


def test_folder_is_read_by_content_and_the_summary_names_every_file(tmp_path: Path) -> None:
    folder, ids = _folder(tmp_path)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["process", str(folder), "--output", str(out)])
    assert result.exit_code == 1  # notes.txt failed
    assert sorted(_ids(out)) == sorted(ids)
    err = result.stderr
    assert "4 file(s), 30 record(s) handed over, 1 file(s) failed, 3 skipped" in err
    assert f"failed:  {folder.as_posix()}/notes.txt: not valid JSON" in err
    assert f"skipped: {folder.as_posix()}/.git: hidden folder" in err
    assert f"skipped: {folder.as_posix()}/.hidden.json: hidden file" in err
    assert f"skipped: {folder.as_posix()}/image.png: binary file" in err


def test_summary_counts_filtered_records(tmp_path: Path) -> None:
    path = tmp_path / "one.json.gz"
    path.write_bytes(encode_log(make_records(10, seed=2)))
    handler = tmp_path / "only_s3.py"
    handler.write_text(
        "import trailproc\n"
        "class OnlyS3(trailproc.EventProcessor):\n"
        "    def filter_event(self, e): return e.event_source == 's3.amazonaws.com'\n"
        "    def process(self, events): pass\n"
    )
    expected = sum(r["eventSource"] != "s3.amazonaws.com" for r in make_records(10, seed=2))
    assert expected
    command = ["process", str(path), "--handler", "only_s3:OnlyS3"]
    result = subprocess.run(
        [sys.executable, "-m", "trailproc._cli", *command],
        cwd=tmp_path, env={**ENV, "PYTHONPATH": f"{REPO}:{tmp_path}"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{expected} record(s) filtered" in result.stderr


def test_output_is_replaced_unless_append(tmp_path: Path) -> None:
    path = tmp_path / "in.json.gz"
    path.write_bytes(encode_log(make_records(5, seed=1)))
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    for _ in range(2):
        assert runner.invoke(main, ["process", str(path), "--output", str(out)]).exit_code == 0
    assert len(_ids(out)) == 5  # replaced, not appended twice
    appended = runner.invoke(main, ["process", str(path), "--output", str(out), "--append"])
    assert appended.exit_code == 0
    assert len(_ids(out)) == 10
    help_text = runner.invoke(main, ["process", "--help"]).output
    assert "--append" in help_text and "replaces PATH" in " ".join(help_text.split())
    run_help = " ".join(runner.invoke(main, ["run", "--help"]).output.split())
    assert "`run` and `backfill` append to it" in run_help


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_no_empty_output_file_is_left_behind(tmp_path: Path, jobs: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"hello": 1}')
    other = tmp_path / "bad2.json"
    other.write_bytes(b"[1]")
    runner = CliRunner()
    out = tmp_path / "new.jsonl"
    result = runner.invoke(main, ["process", str(bad), str(other), "--output", str(out),
                                  "--jobs", jobs])  # fmt: skip
    assert result.exit_code == 1 and not out.exists()
    # An old file replaced by nothing is gone too (it would pass for this run's output).
    old = tmp_path / "old.jsonl"
    old.write_bytes(b'{"stale": true}\n')
    runner.invoke(main, ["process", str(bad), "--output", str(old), "--jobs", jobs])
    assert not old.exists()
    # ... but kept, untouched, with --append.
    old.write_bytes(b'{"stale": true}\n')
    runner.invoke(main, ["process", str(bad), "--output", str(old), "--append", "--jobs", jobs])
    assert old.read_bytes() == b'{"stale": true}\n'


def test_replace_with_jobs_keeps_every_process_output(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.json.gz").write_bytes(encode_log(make_records(50, seed=i)))
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"old line\n" * 100)
    result = CliRunner().invoke(main, ["process", str(folder), "--output", str(out), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert len(_ids(out)) == 200


_LIMITED = """
import resource, signal, sys
from trailproc._cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["trailproc", *sys.argv[2:]]
main()
"""


def test_failed_write_leaves_whole_lines_and_the_retry_adds_no_duplicate(tmp_path: Path) -> None:
    """A write that fails part way (here the file size limit, as a full disk would) is
    cut back to the batch start; the rerun resumes from the checkpoint and appends the
    rest: every record once, no partial line."""
    path = tmp_path / "in.json.gz"
    records = make_records(300, seed=9)
    path.write_bytes(encode_log(records))
    out = tmp_path / "out.jsonl"
    state = f"sqlite:///{tmp_path / 'state.db'}"
    args = ["process", str(path), "--output", str(out), "--append", "--checkpoint", state,
            "--max-events-per-emit", "50"]  # fmt: skip
    limit = 200_000  # a few batches of 50 lines (~60 KB each) fit, then one is cut short
    first = subprocess.run([sys.executable, "-c", _LIMITED, str(limit), *args], env=ENV,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert first.returncode == 1, first.stderr
    assert "File too large" in first.stderr or "EFBIG" in first.stderr
    data = out.read_bytes()
    assert 0 < len(data) < limit and data.endswith(b"\n")
    written = _ids(out)  # every line parses: no half line
    assert len(written) % 50 == 0 and written == [r["eventID"] for r in records[: len(written)]]
    second = subprocess.run([sys.executable, "-m", "trailproc._cli", *args], env=ENV,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert _ids(out) == [r["eventID"] for r in records]


def _many_files(tmp_path: Path) -> Path:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.json.gz").write_bytes(encode_log(make_records(1500, seed=i)))
    return folder


def test_process_into_head_ends_quietly_with_status_0(tmp_path: Path) -> None:
    folder = _many_files(tmp_path)
    producer = subprocess.Popen(
        [sys.executable, "-m", "trailproc._cli", "process", str(folder), "--output", "-"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    head = subprocess.Popen(["head", "-n", "2"], stdin=producer.stdout, stdout=subprocess.PIPE)
    assert producer.stdout is not None and producer.stderr is not None
    producer.stdout.close()  # only `head` reads the pipe now
    lines, _ = head.communicate(timeout=60)
    stderr = producer.stderr.read()
    assert producer.wait(timeout=60) == 0
    assert len(lines.splitlines()) == 2
    assert stderr == b""  # no BrokenPipe error, no traceback, no summary of failures


def test_tail_sample_into_head_ends_quietly(tmp_path: Path) -> None:
    """`python samples/tail.py 2>&1 | head` (sample deliveries on a local moto server)."""
    result = subprocess.run(
        f"{sys.executable} samples/tail.py 2>&1 | head -n 3; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", cwd=REPO, env=ENV,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == 3
    assert "Error" not in result.stderr and "Traceback" not in result.stderr


def test_run_into_head_stops_and_keeps_every_message(sandbox: TrailSandbox) -> None:
    """`trailproc run --output - | head`: the daemon stops once the reader has gone
    (status 0), and no message is deleted for records that went nowhere."""
    for seed in range(3):
        sandbox.deliver(make_records(1500, seed=seed))
    command = (f"{sys.executable} -m trailproc._cli run --queue-url {sandbox.queue_url} "
               "--exit-when-idle --wait-time 1 --checkpoint memory --output - "
               "| head -n 1; exit ${PIPESTATUS[0]}")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # with the moto server's settings
    result = subprocess.run(command, shell=True, executable="/bin/bash", env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 1
    assert sandbox.queue_depth() == 3
