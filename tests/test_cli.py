"""The `trailproc` command line: process --jobs, run --workers, help and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from trailproc._cli import main
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["eventID"] for line in path.read_bytes().splitlines()]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "process", "demo", "backfill", "validate", "check"):
        assert f"  {command} " in result.output


def test_process_with_two_jobs_hands_over_everything_once(tmp_path: Path) -> None:
    expected = []
    for i in range(6):
        records = make_records(150, seed=i)
        expected += [r["eventID"] for r in records]
        (tmp_path / f"{i}.json.gz").write_bytes(encode_log(records))
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "trailproc._cli", "process", str(tmp_path), "--jobs", "2",
         "--output", str(out), "--log-format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(_ids(out)) == sorted(expected)
    assert "900 record(s) handed over" in proc.stderr


def test_process_reports_failed_files_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "good.json.gz").write_bytes(encode_log(make_records(3)))
    (tmp_path / "bad.json.gz").write_bytes(b"\x1f\x8bnot really gzip")
    result = CliRunner().invoke(main, ["process", str(tmp_path), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "1 file(s), 3 record(s) handed over, 1 file(s) failed" in result.output


def test_run_with_two_workers_shares_the_queue(sandbox: TrailSandbox, tmp_path: Path) -> None:
    expected = []
    for i in range(8):
        records = make_records(50, seed=100 + i)
        expected += [r["eventID"] for r in records]
        sandbox.deliver(records, key=log_key(unique=f"workers{i:02d}abcdefg"))
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "trailproc._cli", "run", "--queue-url", sandbox.queue_url,
         "--workers", "2", "--exit-when-idle", "--wait-time", "1", "--output", str(out),
         "--state-dir", str(tmp_path / "state"), "--log-format", "json"],
        env=sandbox.env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(_ids(out)) == sorted(expected)
    assert sandbox.queue_depth() == 0


def test_demo_runs_the_whole_pipeline_on_a_local_sandbox() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [sys.executable, "-m", "trailproc._cli", "demo", "--files", "3", "--records", "12"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Processed 36 records from 3 log files" in proc.stdout
    assert "queue depth now 0." in proc.stdout and "demo OK" in proc.stdout


def _work_with_logs(tmp_path: Path, files: int) -> Path:
    """A working folder with `logs/` holding `files` small log files."""
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    for i in range(files):
        (work / "logs" / f"{i}.json.gz").write_bytes(encode_log(make_records(4, seed=i)))
    return work


def test_handler_module_in_the_current_folder_is_found(tmp_path: Path) -> None:
    """`--handler mod:attr` finds `mod.py` in the current folder with the installed
    `trailproc` command (whose own folder, not the current one, starts sys.path), in
    `--jobs` worker processes too, without PYTHONPATH."""
    script = Path(sys.executable).parent / "trailproc"
    assert script.exists(), "the trailproc console script is installed beside python"
    work = _work_with_logs(tmp_path, files=2)
    (work / "localhandler.py").write_text(
        "import os\n"
        "with open('imported.txt', 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
        "def on_event(event):\n"
        "    with open('seen.txt', 'a') as f:\n"
        "        f.write(f'{os.getpid()} {event.event_id}\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(script), "process", "logs", "--handler", "localhandler:on_event", "--jobs", "2",
         "--log-format", "json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = [line.split() for line in (work / "seen.txt").read_text().splitlines()]
    assert len(seen) == 8 and len({event_id for _pid, event_id in seen}) == 8
    # Both processes imported it (which of them handled which file is up to timing:
    # each takes the next file when it has room).
    assert len(set((work / "imported.txt").read_text().split())) == 2


def test_a_failed_jobs_process_fails_the_run_with_its_error(tmp_path: Path) -> None:
    """A `--jobs` child that fails (here: its handler cannot be loaded there) fails the
    whole run with one line naming its error, even though the other process handed
    over every file it claimed."""
    work = _work_with_logs(tmp_path, files=3)
    (work / "onlyhere.py").write_text(
        "import os\n"
        "if os.getpid() != int(os.environ['FIRST_PID']):\n"
        "    raise RuntimeError('handler refused in this process')\n"
        "def on_event(event):\n"
        "    pass\n"
    )
    code = (
        "import os, sys; os.environ['FIRST_PID'] = str(os.getpid()); "
        "from trailproc._cli import main; sys.argv[0] = 'trailproc'; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "process", "logs", "--handler", "onlyhere:on_event",
         "--jobs", "2", "--log-format", "json"],
        cwd=work, env={**os.environ, "PYTHONPATH": str(work)}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: 1 of 2 processes failed"), proc.stderr[-2000:]
    assert last.endswith("RuntimeError: handler refused in this process")


def test_a_local_file_error_names_its_path(tmp_path: Path) -> None:
    """A failure in a local file (no bucket) is located by its path, not as S3."""
    import trailproc

    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"\x1f\x8bnot really gzip")
    result = trailproc.process_paths([str(bad)], output=str(tmp_path / "out.jsonl"))
    (failed,) = result.failed_files
    assert failed.error is not None
    assert str(failed.error).endswith(f"({bad})")
    assert "s3://" not in str(failed.error)


def test_library_calls_log_to_stderr_at_info_unless_the_app_configured_structlog(
    tmp_path: Path,
) -> None:
    """An application that never configured structlog gets trailproc's own setup (info
    and up, to stderr; JSON when not a terminal), not structlog's default of every level
    to stdout; an application that did configure it keeps its own."""
    (tmp_path / "a.json.gz").write_bytes(encode_log(make_records(3)))
    (tmp_path / "bad.json.gz").write_bytes(b"\x1f\x8bnot really gzip")
    call = (
        "import trailproc; from trailproc._observe import get_logger; "
        f"trailproc.process_paths([{str(tmp_path)!r}], output={str(tmp_path / 'o.jsonl')!r}); "
        "get_logger('app').debug('app debug line')"
    )
    plain = subprocess.run([sys.executable, "-c", call], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert plain.stdout == ""
    lines = [json.loads(line) for line in plain.stderr.splitlines()]
    assert any(e["level"] == "error" and e["key"].endswith("bad.json.gz") for e in lines)
    assert "app debug line" not in plain.stderr

    configured = subprocess.run(
        [sys.executable, "-c", "import structlog; structlog.configure(); " + call],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert configured.returncode == 0, configured.stderr[-2000:]
    assert "app debug line" in configured.stdout  # the app's setup (structlog's default)
