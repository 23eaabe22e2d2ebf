"""trailproc benchmarks: each target side by side with its baseline, in one run.

    python benchmarks/run.py [--quick] [--only offline,e2e,to_dict,scaling,memory,imports]

Generates its own realistic data under benchmarks/.data/ (cached between runs), times
every workload in a fresh interpreter (see _workloads.py), prints a table of ratios with
the absolute figures and machine details, and writes benchmarks/results.md.

Ratios are what matters: the machine may be shared and noisy, so each pair is measured
interleaved in the same run and the median of the repeats is kept. Nothing here is a
test; no figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
WORKLOADS = HERE / "_workloads.py"
POOL_SIZE = 5000


# --- data -------------------------------------------------------------------------------


def _pool() -> list[bytes]:
    """Realistic records (~1.4 KB, from trailproc.sandbox), encoded once and cached."""
    cache = DATA / f"pool-{POOL_SIZE}.jsonl"
    if not cache.exists():
        from trailproc.sandbox import make_records

        DATA.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(r, separators=(",", ":")) for r in make_records(POOL_SIZE, seed=7)]
        cache.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [line.encode() for line in cache.read_text(encoding="utf-8").splitlines()]


def _log_body(pool: list[bytes], count: int, offset: int) -> bytes:
    picked = [pool[(offset + i * 7) % len(pool)] for i in range(count)]
    return b'{"Records":[' + b",".join(picked) + b"]}"


def log_files(name: str, files: int, records: int, level: int = 6) -> Path:
    """A folder of `files` gzip log files of `records` records (CloudTrail's layout)."""
    folder = DATA / f"{name}-{files}x{records}"
    marker = folder / ".complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pool = _pool()
    for i in range(files):
        body = _log_body(pool, records, i * 131)
        stamp = f"20261101T{i // 60 % 24:02d}{i % 60:02d}Z"
        path = folder / f"123456789012_CloudTrail_us-east-1_{stamp}_{i:016x}.json.gz"
        path.write_bytes(gzip.compress(body, compresslevel=level))
    marker.write_text(f"{files}x{records}\n")
    return folder


def big_file(megabytes: int) -> tuple[Path, int]:
    """One log file of about `megabytes` MB decompressed; returns (path, exact size)."""
    folder = DATA / f"big-{megabytes}mb"
    path = folder / "123456789012_CloudTrail_us-east-1_20261101T0000Z_big.json.gz"
    size_file = folder / ".size"
    if size_file.exists() and path.exists():
        return path, int(size_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    pool = _pool()
    mean = sum(map(len, pool)) / len(pool) + 1
    body = _log_body(pool, int(megabytes * 1e6 / mean), 0)
    path.write_bytes(gzip.compress(body, compresslevel=1))
    size_file.write_text(str(len(body)))
    return path, len(body)


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


# --- running workloads ------------------------------------------------------------------


def _trailproc_cmd() -> list[str]:
    script = Path(sys.executable).parent / "trailproc"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from trailproc.cli import main; main()"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


def workload(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one `_workloads.py` function in a fresh interpreter; its JSON line."""
    proc = subprocess.run(
        [sys.executable, str(WORKLOADS), *args],
        capture_output=True,
        text=True,
        env=_env(env),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"workload {args[0]} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def timed_command(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall time, CPU time and peak RSS of one command (wait4 gives the child's own)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {proc.returncode}:\n{err[-3000:]}")
    return {
        "seconds": seconds,
        "cpu": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "stdout": out,
        "stderr": err,
    }


def median_of(runs: list[dict[str, Any]], key: str = "seconds") -> float:
    return float(statistics.median(r[key] for r in runs))


@dataclass
class Row:
    target: str
    ours: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None
    note: str = ""


def _rate(records: int, seconds: float) -> str:
    return f"{records / seconds / 1000:,.0f}k rec/s ({seconds:.2f} s)"


# --- targets ----------------------------------------------------------------------------


def bench_offline(quick: bool, repeats: int) -> list[Row]:
    files, per = (10, 5000) if quick else (30, 5000)
    folder = log_files("offline", files, per)
    expected = files * per
    work = Path(tempfile.mkdtemp(prefix="trailproc-bench-"))
    cli: list[dict[str, Any]] = []
    inproc: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    std: list[dict[str, Any]] = []
    try:
        for _ in range(repeats):
            out = work / "cli.jsonl"
            out.unlink(missing_ok=True)
            cmd = [*_trailproc_cmd(), "process", str(folder), "--output", str(out),
                   "--checkpoint", "memory", "--log-level", "warning"]  # fmt: skip
            cli.append(timed_command(cmd))
            assert count_lines(out) == expected, "trailproc process lost records"
            out.unlink()
            inproc.append(workload("trailproc_process", str(folder), str(out)))
            out.unlink()
            bare.append(workload("bare", str(folder), str(out)))
            assert count_lines(out) == expected
            out.unlink()
            if not std or not quick:  # the slow one: once is enough in --quick
                std.append(workload("stdlib", str(folder), str(out)))
                assert count_lines(out) == expected
                out.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_cli, t_in, t_bare, t_std = (median_of(x) for x in (cli, inproc, bare, std))
    backend = bare[0].get("backend", "?")
    data = f"{files} files x {per:,} records"
    return [
        Row("1. offline: `process --output` (CLI, incl. start-up) vs bare limit",
            _rate(expected, t_cli), _rate(expected, t_bare), t_bare / t_cli, ">= 0.6",
            t_bare / t_cli >= 0.6, f"{data}; bare = gunzip({backend}) + msgspec split + write"),
        Row("1. offline: pipeline in-process vs bare limit",
            _rate(expected, t_in), _rate(expected, t_bare), t_bare / t_in, ">= 0.6",
            t_bare / t_in >= 0.6, "process_paths timed inside the process"),
        Row("1. offline: `process --output` (CLI) vs stdlib json",
            _rate(expected, t_cli), _rate(expected, t_std), t_std / t_cli, ">= 4x",
            t_std / t_cli >= 4, "stdlib = gzip + json.loads + json.dumps per record"),
    ]  # fmt: skip


def bench_to_dict(quick: bool, repeats: int) -> list[Row]:
    files, per = (10, 5000) if quick else (30, 5000)
    folder = log_files("offline", files, per)
    ours = [workload("trailproc_process", str(folder), "", "bench_handlers:ToDict")
            for _ in range(repeats)]  # fmt: skip
    base = [workload("json_loads", str(folder)) for _ in range(repeats)]
    t_ours, t_base = median_of(ours), median_of(base)
    n = files * per
    return [
        Row("3. full materialisation: `to_dict()` on every event vs json.loads",
            _rate(n, t_ours), _rate(n, t_base), t_base / t_ours, ">= 1.0", t_base / t_ours >= 1,
            "whole pipeline (gunzip, split, batches, handler) vs gzip + json.loads(file)"),
    ]  # fmt: skip


def bench_scaling(quick: bool, repeats: int) -> list[Row]:
    files, per = (10, 5000) if quick else (30, 5000)
    folder = log_files("offline", files, per)
    one: list[dict[str, Any]] = []
    two: list[dict[str, Any]] = []
    for _ in range(repeats):
        one.append(workload("parallel", str(folder), "1", "bench_handlers:ToDict"))
        two.append(workload("parallel", str(folder), "2", "bench_handlers:ToDict"))
    t1, t2 = median_of(one), median_of(two)
    n = files * per
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        Row("4. multi-core: `process --jobs 2` vs `--jobs 1` (to_dict handler)",
            _rate(n, t2), _rate(n, t1), t1 / t2, ">= 1.6x", t1 / t2 >= 1.6,
            f"{cores} usable cores; child start-up (spawn) included"),
    ]  # fmt: skip


def bench_memory(quick: bool, repeats: int) -> list[Row]:
    megabytes = 100 if quick else 400
    path, size = big_file(megabytes)
    cmd = [*_trailproc_cmd(), "process", str(path), "--handler", "bench_handlers:Nothing",
           "--checkpoint", "memory", "--log-level", "warning"]  # fmt: skip
    run = workload("peak_rss", *cmd)
    idle = workload("peak_rss", *_trailproc_cmd(), "--version")
    limit = size / 1e6 + 200
    return [
        Row(f"5. memory: peak RSS, one {size / 1e6:,.0f} MB (decompressed) file",
            f"{run['max_rss_mb']:,.0f} MB", f"limit {limit:,.0f} MB", limit / run["max_rss_mb"],
            "RSS < size + 200 MB", run["max_rss_mb"] < limit,
            f"compressed {path.stat().st_size / 1e6:,.0f} MB; "
            f"idle CLI {idle['max_rss_mb']:,.0f} MB; {run['seconds']:.1f} s"),
    ]  # fmt: skip


def bench_imports(quick: bool, repeats: int) -> list[Row]:
    n = 5 if quick else 9
    rows = []
    baseline = median_of([workload("import_time", "boto3") for _ in range(n)])
    for module in ("trailproc", "trailproc.aws_lambda"):
        try:
            runs = [workload("import_time", module) for _ in range(n)]
        except RuntimeError as exc:
            rows.append(Row(f"6. start-up: import {module}", "n/a", "", None, "", None,
                            str(exc).splitlines()[0]))  # fmt: skip
            continue
        t = median_of(runs)
        loaded = sorted({m for r in runs for m in r["loaded"]})
        clean = not ({"boto3", "aioboto3", "botocore", "aiobotocore"} & set(loaded))
        rows.append(
            Row(f"6. start-up: `import {module}` vs `import boto3`",
                f"{t * 1000:.0f} ms", f"{baseline * 1000:.0f} ms", baseline / t,
                "no boto3/aioboto3", clean, f"also loaded: {', '.join(loaded) or 'none'}")
        )  # fmt: skip
    return rows


def bench_e2e(quick: bool, repeats: int) -> list[Row]:
    from trailproc.sandbox import MotoServer, TrailSandbox

    files, per = (20, 1000) if quick else (60, 1000)
    folder = log_files("e2e", files, per)
    blobs = sorted(folder.glob("*.json.gz"))
    expected = files * per
    work = Path(tempfile.mkdtemp(prefix="trailproc-bench-"))
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    server = MotoServer().start()
    try:
        box = TrailSandbox(server.url).create(visibility_timeout=120)
        keys = []
        for blob in blobs:
            key = f"AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/{blob.name}"
            box.put(key, blob.read_bytes())
            keys.append(key)
        env = {**server.env()}

        def deliver() -> None:
            for key in keys:  # one SNS notification per file, as CloudTrail sends them
                box.notify([key])

        for round_ in range(repeats):
            deliver()
            out = work / "ours.jsonl"
            out.unlink(missing_ok=True)
            state = work / f"state-{round_}"
            cmd = [*_trailproc_cmd(), "run", "--queue-url", box.queue_url, "--output", str(out),
                   "--exit-when-idle", "--wait-time", "1", "--state-dir", str(state),
                   "--log-level", "warning"]  # fmt: skip
            ours.append(timed_command(cmd, env))
            got = count_lines(out)
            assert got == expected, f"trailproc run wrote {got} of {expected} records"
            assert box.queue_depth() == 0
            deliver()
            out.unlink()
            base.append(workload("boto3_consumer", box.queue_url, str(out), env=env))
            assert count_lines(out) == expected
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    t_ours, t_base = median_of(ours), median_of(base)
    return [
        Row("2. end to end: `run --exit-when-idle` vs sequential boto3 consumer",
            _rate(expected, t_ours), _rate(expected, t_base), t_base / t_ours, ">= 4x",
            t_base / t_ours >= 4,
            f"{files} SNS-notified files x {per:,} records, moto server on 127.0.0.1; "
            "CLI start-up and the final 1 s idle poll included on our side")
    ]  # fmt: skip


TARGETS: dict[str, Callable[[bool, int], list[Row]]] = {
    "offline": bench_offline,
    "e2e": bench_e2e,
    "to_dict": bench_to_dict,
    "scaling": bench_scaling,
    "memory": bench_memory,
    "imports": bench_imports,
}


# --- report -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    import msgspec

    from trailproc.pipeline.decode import BACKEND

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {
        "cpus": f"{os.cpu_count()} (usable: {cores})",
        "cpu model": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "msgspec": msgspec.__version__,
        "gunzip backend": BACKEND,
        "load average at start": load,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def render(rows: list[Row], info: dict[str, str], mode: str, elapsed: float) -> str:
    lines = [
        "# trailproc benchmark results",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if mode == 'quick' else ''}` "
        f"({mode} mode, {elapsed:.0f} s). Ratios > 1 favour trailproc "
        "(baseline time / trailproc time; for memory: limit / peak).",
        "",
        "| target | trailproc | baseline | ratio | goal | met | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        lines.append(
            f"| {r.target} | {r.ours} | {r.baseline} | {ratio} | {r.goal} | {met} | {r.note} |"
        )
    lines += ["", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(TARGETS))
    parser.add_argument("--repeats", type=int, help="repeats per workload (median kept)")
    parser.add_argument("--results", default=str(HERE / "results.md"), help="markdown output")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    repeats = args.repeats or (1 if args.quick else 3)
    info = machine()
    started = time.perf_counter()
    rows: list[Row] = []
    for name in names:
        t0 = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows += TARGETS[name](args.quick, repeats)
        except Exception as exc:  # one broken target must not hide the others
            rows.append(Row(name, "error", "", None, "", None, f"{type(exc).__name__}: {exc}"))
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    info["load average at end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = render(rows, info, "quick" if args.quick else "full", time.perf_counter() - started)
    print(report)
    Path(args.results).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
