"""Peak memory of `trailproc run` against hostile deliveries, beside good ones.

    python benchmarks/hostile.py [--only CASE,...] [--repeats N] [--kill-above-mb 8000]

    CASE: record_bomb, number_bomb, line_bomb, gzip_bombs, many_files, big_file

Each case starts a fresh moto server on 127.0.0.1, writes its files to the trail bucket,
announces them on the queue together with a few good deliveries, and runs
`trailproc run --exit-when-idle` with default settings in a subprocess. It reports:

- the daemon's peak RSS (wait4's ru_maxrss; a watchdog kills it above --kill-above-mb so
  an unbounded case cannot take the machine down, and the row then says "killed");
- whether every good record was handed over exactly once (event ids in --output);
- whether every hostile message is still on the queue (none deleted).

The cases are the ones a hostile writer to the bucket or the queue can produce:

- record_bomb: ~300 KB of gzip inflating to ~300 MB of `{"Records":[{},{},...]}`;
- number_bomb: ~200 KB of gzip inflating to ~200 MB of `{"Records":[1,1,...]}` (no `{`
  to count, a value per two bytes);
- line_bomb: ~200 KB of gzip inflating to ~200 MB of lines holding `1` (NDJSON, another
  shape, no `{` either);
- gzip_bombs: six 2 GiB gzip bombs announced at once (six messages);
- many_files: one message naming 400 log files of 4 MB each (decompressed), with a
  handler slower than the downloads (20 ms a batch);
- big_file: one honest 400 MB (decompressed) delivery.

Nothing here is a test; no figure is asserted. Results go to stdout as a table, with the
median and spread of the repeats.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records, moto_server

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
GOOD_FILES = 5
GOOD_RECORDS = 50


@dataclass
class Case:
    name: str
    describe: str
    hostile_keys: list[list[str]] = field(default_factory=list)  # one list per message


# --- hostile bodies (generated once, cached under benchmarks/.data) ----------------------


def _cached(name: str, make: Callable[[Path], None]) -> Path:
    path = DATA / name
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        make(tmp)
        tmp.rename(path)
    return path


def _stream_gzip(path: Path, head: bytes, chunk: bytes, repeats: int, tail: bytes) -> None:
    """gzip of head + chunk * repeats + tail, written without holding it in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        out.write(compressor.compress(head))
        for _ in range(repeats):
            out.write(compressor.compress(chunk))
        out.write(compressor.compress(tail))
        out.write(compressor.flush())


def record_bomb() -> bytes:
    # 100 million empty records: 3 bytes each ("{}," ) inflate to ~300 MB.
    path = _cached("record-bomb.json.gz", lambda p: _stream_gzip(
        p, b'{"Records":[', b"{}," * 1_000_000, 100, b"{}]}"))  # fmt: skip
    return path.read_bytes()


def number_bomb() -> bytes:
    # 100 million numbers: 2 bytes each ("1,") inflate to ~200 MB.
    path = _cached("number-bomb.json.gz", lambda p: _stream_gzip(
        p, b'{"Records":[', b"1," * 1_000_000, 100, b"1]}"))  # fmt: skip
    return path.read_bytes()


def line_bomb() -> bytes:
    # 100 million lines holding a number: 2 bytes each inflate to ~200 MB.
    path = _cached("line-bomb-numbers.json.gz", lambda p: _stream_gzip(
        p, b"", b"1\n" * 1_000_000, 100, b""))  # fmt: skip
    return path.read_bytes()


def gzip_bomb() -> bytes:
    # 2 GiB of spaces inside a valid-looking envelope: legal JSON, if it were ever read.
    path = _cached("gzip-bomb-2g.json.gz", lambda p: _stream_gzip(
        p, b'{"Records":[', b" " * (1 << 24), 128, b"]}"))  # fmt: skip
    return path.read_bytes()


def four_mb_file(seed: int) -> bytes:
    # Realistic records (~1.4 KB each) up to ~4 MB decompressed.
    records = make_records(2900, seed=seed)
    return encode_log(records)


def big_file() -> bytes:
    def make(p: Path) -> None:
        pool = [json.dumps(r, separators=(",", ":")).encode() for r in make_records(5000, seed=3)]
        mean = sum(map(len, pool)) / len(pool) + 1
        count = int(400e6 / mean)
        body = b'{"Records":[' + b",".join(pool[i % len(pool)] for i in range(count)) + b"]}"
        p.write_bytes(gzip.compress(body, compresslevel=1))

    return _cached("honest-400mb.json.gz", make).read_bytes()


# --- one run -----------------------------------------------------------------------------


def _watch_rss(pid: int, limit_mb: float, killed: list[bool]) -> None:
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmRSS:") and int(line.split()[1]) / 1024 > limit_mb:
                killed.append(True)
                os.kill(pid, 9)
                return
        time.sleep(0.05)


def run_daemon(
    box: TrailSandbox, out: Path, state: Path, limit_mb: float, slow: bool
) -> dict[str, object]:
    """`trailproc run --exit-when-idle` from a small launcher process; its peak RSS.
    `slow`: a handler slower than the downloads instead of --output."""
    cmd = [sys.executable, "-c", "from trailproc._cli import main; main()", "run",
           "--queue-url", box.queue_url, "--exit-when-idle",
           "--log-level", "warning", "--wait-time", "1"]  # fmt: skip
    cmd += ["--handler", "bench_handlers:SlowWriter"] if slow else ["--output", str(out)]
    env = {**box.env(), **MOTO_ENV, "TRAILPROC_STATE_DIR": str(state),
           "TRAILPROC_STATS_INTERVAL": "0", "TRAILPROC_BENCH_IDS": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE),
                                                       os.environ.get("PYTHONPATH")]))}  # fmt: skip
    launcher = [sys.executable, str(HERE / "_workloads.py"), "peak_rss_unchecked", *cmd]
    start = time.perf_counter()
    proc = subprocess.Popen(launcher, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    killed: list[bool] = []
    watcher = threading.Thread(target=_watch_grandchild, args=(proc.pid, limit_mb, killed),
                               daemon=True)  # fmt: skip
    watcher.start()
    stdout, stderr = proc.communicate(timeout=900)
    report = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
    return {"seconds": time.perf_counter() - start, "rss_mb": report.get("max_rss_mb"),
            "exit": report.get("exit"), "killed": bool(killed),
            "stderr": stderr[-2000:]}  # fmt: skip


def _watch_grandchild(launcher_pid: int, limit_mb: float, killed: list[bool]) -> None:
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children")
    for _ in range(400):
        try:
            pids = children.read_text().split()
        except OSError:
            return
        if pids:
            _watch_rss(int(pids[0]), limit_mb, killed)
            return
        time.sleep(0.01)


def handed_over(out: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    if out.exists():
        for line in out.read_bytes().splitlines():
            if line.strip():
                counts[json.loads(line)["eventID"]] += 1
    return counts


def one_case(name: str, limit_mb: float) -> dict[str, object]:
    with moto_server() as moto, tempfile.TemporaryDirectory() as tmp:
        box = TrailSandbox(moto.url).create(visibility_timeout=60)
        good_ids: list[str] = []
        for n in range(GOOD_FILES):
            records = make_records(GOOD_RECORDS, seed=100 + n)
            good_ids += [r["eventID"] for r in records]
            box.deliver(records)
        hostile = stage(name, box)
        out, state = Path(tmp) / "out.jsonl", Path(tmp) / "state"
        result = run_daemon(box, out, state, limit_mb, slow=name == "many_files")
        counts = handed_over(out)
        result["good_once"] = all(counts[i] == 1 for i in good_ids)
        result["records_out"] = sum(counts.values())
        result["hostile_kept"] = box.queue_depth() >= hostile
        return result


def stage(name: str, box: TrailSandbox) -> int:
    """Put the case's files in the bucket and announce them; returns hostile messages."""
    if name == "record_bomb":
        key = log_key(unique="recordbomb000001")
        box.put(key, record_bomb())
        box.notify([key])
        return 1
    if name in ("number_bomb", "line_bomb"):
        key = log_key(unique=f"{name.replace('_', '')}0001")
        box.put(key, number_bomb() if name == "number_bomb" else line_bomb())
        box.notify([key])
        return 1
    if name == "gzip_bombs":
        body = gzip_bomb()
        for n in range(6):
            key = log_key(unique=f"gzipbomb{n:08d}")
            box.put(key, body)
            box.notify([key])
        return 6
    if name == "many_files":
        keys = []
        bodies = [four_mb_file(seed) for seed in range(8)]
        for n in range(400):
            key = log_key(unique=f"manyfiles{n:07d}")
            box.put(key, bodies[n % len(bodies)])
            keys.append(key)
        box.notify(keys)
        return 0  # a legitimate message: it should be processed, not kept
    if name == "big_file":
        key = log_key(unique="honest400mb00001")
        box.put(key, big_file())
        box.notify([key])
        return 0
    raise SystemExit(f"unknown case {name}")


MOTO_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}  # fmt: skip
CASES = ["record_bomb", "number_bomb", "line_bomb", "gzip_bombs", "many_files", "big_file"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kill-above-mb", type=float, default=8000)
    args = parser.parse_args()
    rows = []
    for name in args.only.split(","):
        runs = [one_case(name, args.kill_above_mb) for _ in range(args.repeats)]
        rss = [float(r["rss_mb"] or 0) for r in runs]
        rows.append((name, runs, rss))
        print(f"{name}: " + "; ".join(
            f"{r['rss_mb'] or 0:,.0f} MB{' (killed)' if r['killed'] else ''} "
            f"{r['seconds']:.1f} s records_out={r['records_out']} "
            f"good_once={r['good_once']} hostile_kept={r['hostile_kept']}"
            for r in runs), flush=True)  # fmt: skip
    print(
        "\n| case | peak RSS median | spread (min-max) | killed | records out | good once "
        "| hostile kept |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, runs, rss in rows:
        print(
            f"| {name} | {statistics.median(rss):,.0f} MB | {min(rss):,.0f}-{max(rss):,.0f} MB"
            f" | {sum(bool(r['killed']) for r in runs)}/{len(runs)}"
            f" | {runs[0]['records_out']:,} | {all(r['good_once'] for r in runs)}"
            f" | {all(r['hostile_kept'] for r in runs)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
