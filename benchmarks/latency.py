"""Benchmarks with a round trip: small files through a fed queue, and a Lambda cold start.

Both put `latency_proxy.py` between the client and one moto server on 127.0.0.1, so every
AWS request pays `--delay-ms` (20 by default) as it would against a region, and both
count requests at the proxy. `run.py` registers the two targets (`small_files`,
`cold_start`); see benchmarks/README.md for the method.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DELAY_MS = float(os.environ.get("BENCH_DELAY_MS", "20"))
ACCOUNT_PREFIX = "AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/"


class LatencyProxy:
    """`latency_proxy.py` as a subprocess in front of `upstream`."""

    def __init__(self, upstream: str, delay_ms: float = DELAY_MS) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "latency_proxy.py"), "--upstream", upstream,
             "--delay-ms", str(delay_ms)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.close()
            raise RuntimeError(f"latency proxy did not start: {line!r}")
        self.url = line.split()[-1]

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(self.url + "/__stats__", timeout=10) as reply:
            return dict(json.load(reply))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def requests_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    old = before["requests"]
    return {k: v - old.get(k, 0) for k, v in after["requests"].items() if v - old.get(k, 0)}


def per_service(counts: dict[str, int], service: str) -> int:
    return sum(v for k, v in counts.items() if k.startswith(service + ":"))


def sns_envelope(topic_arn: str, message: str) -> str:
    """The body SNS delivers to a subscribed queue (raw delivery off) for `message`."""
    return json.dumps({
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic_arn,
        "Message": message,
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    })  # fmt: skip


class Feeder(threading.Thread):
    """Announces files as a live trail does: keeps about `depth` messages on the queue.

    Talks to moto directly (not through the proxy), so none of its requests is counted
    against the consumer. It puts CloudTrail's SNS notifications on the queue with
    SendMessageBatch, in the envelope SNS delivers them in: what reaches the consumer
    is the same as through an SNS topic, without moto fanning each publish out to its
    subscriptions (CPU that AWS spends on its own machines, ~16 % of moto's in a run).
    """

    def __init__(self, box: Any, keys: list[str], server: Any, depth: int = 40) -> None:
        super().__init__(daemon=True)
        self.box, self.keys, self.server, self.depth = box, keys, server, depth
        self.sent = 0
        self.error: BaseException | None = None
        self.halt = threading.Event()  # the consumer failed: stop feeding
        self.received_before = server.received()

    def visible(self) -> int:
        """Sent and not yet received: the visible messages, as nothing returns to the
        queue in these runs (a 300 s visibility timeout, every message deleted; each run
        checks the queue is empty at the end). Read from the server's own counter, not
        GetQueueAttributes (see moto_launcher.py)."""
        return self.sent - (self.server.received() - self.received_before)

    def run(self) -> None:
        sqs = self.box.client("sqs")
        try:
            while self.sent < len(self.keys) and not self.halt.is_set():
                want = min(self.depth - self.visible(), len(self.keys) - self.sent)
                if want <= 0:
                    time.sleep(0.025)  # each look is a request to the server, on the same cores
                    continue
                while want > 0:
                    batch = self.keys[self.sent : self.sent + min(want, 10)]
                    sqs.send_message_batch(QueueUrl=self.box.queue_url, Entries=[
                        {"Id": str(i), "MessageBody": sns_envelope(self.box.topic_arn,
                            json.dumps({"s3Bucket": self.box.bucket, "s3ObjectKey": [key]}))}
                        for i, key in enumerate(batch)])  # fmt: skip
                    self.sent += len(batch)
                    want -= len(batch)
        except BaseException as exc:  # reported by the driver after the run
            self.error = exc


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


class _LineCounter:
    """Counts the lines of a growing file, reading only what was appended since last time.

    The output grows to ~140 MB; re-reading it whole every 10 ms cost the driver ~6 s of
    CPU per run, taken from the two cores both consumers share.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    self.lines += chunk.count(b"\n")
                    self.offset += len(chunk)
        except FileNotFoundError:
            pass
        return self.lines


def _wait_for_lines(proc: subprocess.Popen[bytes], out: Path, expected: int,
                    limit: float) -> float:  # fmt: skip
    """Seconds from now until `out` holds `expected` lines (polled every 10 ms)."""
    start = time.perf_counter()
    counter = _LineCounter(out)
    while counter.count() < expected:
        if proc.poll() is not None:
            raise RuntimeError(f"consumer exited {proc.returncode} with {counter.count()} lines")
        if time.perf_counter() - start > limit:
            raise RuntimeError(f"only {counter.count()} of {expected} lines after {limit:.0f} s")
        time.sleep(0.01)
    return time.perf_counter() - start


def timed_consumer(cmd: list[str], env: dict[str, str], out: Path, expected: int,
                   stop: bool) -> dict[str, Any]:  # fmt: skip
    """Run one consumer until every record is in `out`; SIGTERM it then if `stop`.

    `seconds`: process start to the last record written (both sides are timed the same
    way, by polling the output). `cpu`: the whole process (wait4), start-up and shutdown
    included.
    """
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            seconds = (time.perf_counter() - start) + _wait_for_lines(proc, out, expected, 900)
            if stop:
                proc.send_signal(signal.SIGTERM)
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            log.seek(0)
            sys.stderr.write(log.read()[-3000:].decode(errors="replace"))
            raise
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.seek(0)
            raise RuntimeError(f"{cmd[:3]} exited {code}: {log.read()[-3000:]!r}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
            "user": usage.ru_utime, "system": usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024}  # fmt: skip


class SmallFiles:
    """1,000 x 100-record files announced by a feeder, consumed through the proxy."""

    def __init__(self, files: int, per: int, work: Path, folder: Path) -> None:
        from run import _Moto

        from trailproc._sandbox import TrailSandbox

        self.files, self.per, self.work = files, per, work
        self.expected = files * per
        self.server = _Moto()
        self.proxy: LatencyProxy | None = None
        try:
            self.proxy = LatencyProxy(self.server.url)
            self.box = TrailSandbox(self.server.url).create(visibility_timeout=300)
            self.keys = []
            for blob in sorted(folder.glob("*.json.gz")):
                key = ACCOUNT_PREFIX + blob.name
                self.box.put(key, blob.read_bytes())
                self.keys.append(key)
        except BaseException:
            self.close()
            raise
        self.rounds = 0

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.server.stop()

    def env(self) -> dict[str, str]:
        assert self.proxy is not None
        env = {**os.environ, **self.server.env(), "AWS_ENDPOINT_URL": self.proxy.url}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        return env

    def settled(self, limit: float = 40.0) -> dict[str, Any]:
        """The proxy's stats once no request is in flight through it.

        A consumer stopped during a long poll leaves that ReceiveMessage waiting at the
        server, as SQS does: messages arriving within its wait go to the dead request and
        stay invisible for its visibility timeout. Feeding the next run before it ends
        hid ten messages from that run for 60 s.
        """
        assert self.proxy is not None
        deadline = time.monotonic() + limit
        while (stats := self.proxy.stats())["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.1)
        return stats

    def run(self, cmd_for: Callable[[Path, str], list[str]], stop: bool) -> dict[str, Any]:
        assert self.proxy is not None
        self.rounds += 1
        out = self.work / f"out-{self.rounds}.jsonl"
        before = self.settled()
        feeder = Feeder(self.box, self.keys, self.server)
        feeder.start()
        try:
            result = timed_consumer(cmd_for(out, self.box.queue_url), self.env(), out,
                                    self.expected, stop)  # fmt: skip
        except BaseException:
            feeder.halt.set()
            raise
        finally:
            feeder.join()
        if feeder.error is not None:
            raise RuntimeError(f"feeder failed: {feeder.error!r}")
        after = self.proxy.stats()
        got = _lines(out)
        out.unlink()
        assert got == self.expected, f"wrote {got} of {self.expected} records"
        left = self.box.queue_depth()
        assert left == 0, f"{left} messages left on the queue"
        result["requests"] = requests_between(before, after)
        result["peak_in_flight"] = after["peak_in_flight"]
        result["connections"] = after["connections"] - before["connections"]
        return result


def trailproc_cmd(work: Path) -> Callable[[Path, str], list[str]]:
    from run import _trailproc_cmd

    counter = iter(range(10**6))

    def cmd(out: Path, queue_url: str) -> list[str]:
        return [
            *_trailproc_cmd(),
            "run",
            "--queue-url",
            queue_url,
            "--output",
            str(out),
            "--state-dir",
            str(work / f"state-{next(counter)}"),
            "--log-level",
            "warning",
        ]

    return cmd  # fmt: skip


def consumer_cmd(expected: int) -> Callable[[Path, str], list[str]]:
    def cmd(out: Path, queue_url: str) -> list[str]:
        return [
            sys.executable,
            str(HERE / "_workloads.py"),
            "boto3_consumer",
            queue_url,
            str(out),
            str(expected),
        ]

    return cmd


# --- Lambda cold start --------------------------------------------------------------------


def lambda_event(box: Any, key: str) -> dict[str, Any]:
    """The SQS event Lambda hands a function for one CloudTrail notification of `key`."""
    box.notify([key])
    sqs = box.client("sqs")
    message = sqs.receive_message(
        QueueUrl=box.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=5, AttributeNames=["All"]
    )["Messages"][0]
    sqs.delete_message(QueueUrl=box.queue_url, ReceiptHandle=message["ReceiptHandle"])
    arn = box.client("sqs").get_queue_attributes(
        QueueUrl=box.queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    return {"Records": [{
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"], "attributes": message.get("Attributes", {}),
        "messageAttributes": {}, "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs",
        "eventSourceARN": arn, "awsRegion": box.region,
    }]}  # fmt: skip
