"""One or more small-files runs of one side, with the CPU of every process involved.

    python benchmarks/probe_small_files.py ours|base [RUNS] [--spy FILE]

Prints, per run: wall time, the consumer's CPU, moto's and the latency proxy's CPU
during the run, the driver's own CPU (feeder and output polling) and the requests the
proxy counted. `--spy FILE` records our process with py-spy (`--gil`, raw format) for
the last run. A tool for finding where a run's CPU goes; `run.py` is the benchmark.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from latency import SmallFiles, consumer_cmd, trailproc_cmd  # noqa: E402
from run import _proc_cpu, log_files  # noqa: E402


def spy_on(marker: str, out_file: str, rate: int) -> threading.Thread:
    """py-spy (`--gil`, raw) of the process whose command line contains `marker`, from
    when it appears until it exits."""

    def find() -> int:
        while True:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        cmdline = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if marker.encode() in cmdline and b"py-spy" not in cmdline:
                        return int(entry.name)
            time.sleep(0.005)

    def spy() -> None:
        cmd = ["py-spy", "record", "--gil", "--nonblocking", "-r", str(rate), "-f",
               "raw", "-o", out_file, "-p", str(find())]  # fmt: skip
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    thread = threading.Thread(target=spy, daemon=True)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("side", choices=["ours", "base"])
    parser.add_argument("runs", type=int, nargs="?", default=2)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--spy", help="py-spy raw output of our process (last run)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--spy-moto", help="py-spy raw output of moto's server (last run)")
    args = parser.parse_args()
    folder = log_files("small", args.files, 100)
    work = Path(tempfile.mkdtemp(prefix="probe-"))
    bench = SmallFiles(args.files, 100, work, folder)
    assert bench.proxy is not None and bench.server.process is not None
    try:
        ours = trailproc_cmd(work)  # one per probe: each run gets a fresh state dir
        for i in range(args.runs):
            moto0, proxy0 = _proc_cpu(bench.server.process.pid), _proc_cpu(bench.proxy.process.pid)
            t0 = os.times()
            spy = None
            if args.spy_moto and i == args.runs - 1:
                spy = subprocess.Popen(["py-spy", "record", "-p", str(bench.server.process.pid),
                                        "--gil", "-r", "200", "-f", "raw", "-o", args.spy_moto,
                                        "--nonblocking"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
            if args.side == "ours":
                spying = None
                if args.spy and i == args.runs - 1:
                    spying = spy_on(f"state-{i}", args.spy, args.rate)
                result = bench.run(ours, stop=True)
                if spying is not None:
                    spying.join()
            else:
                result = bench.run(consumer_cmd(bench.expected), stop=False)
            t1 = os.times()
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
            moto = _proc_cpu(bench.server.process.pid) - moto0
            proxy = _proc_cpu(bench.proxy.process.pid) - proxy0
            driver = (t1.user + t1.system) - (t0.user + t0.system)
            print(f"{args.side}: wall {result['seconds']:.2f} cpu {result['cpu']:.2f} "
                  f"({result['cpu'] / bench.expected * 1e6:.1f} us/event; "
                  f"user {result['user']:.2f} system {result['system']:.2f}) moto {moto:.2f} "
                  f"proxy {proxy:.2f} driver {driver:.2f} requests {result['requests']} "
                  f"peak {result['peak_in_flight']}", flush=True)  # fmt: skip
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
