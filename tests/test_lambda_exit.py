"""A handler from `make_handler` closes its warm state when the interpreter exits.

Lambda environments (and `sam local invoke`, scripts, tests) exit without calling
`close()`; the runtime registers it at exit itself, so aiohttp never prints
"Unclosed client session". Checked in a real subprocess, on its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trailproc._sandbox import TrailSandbox, make_records

REPO = Path(__file__).resolve().parent.parent

_SCRIPT = """
import json, sys
from trailproc.aws_lambda import make_handler

seen = []
handler = make_handler(lambda event: seen.append(event.event_id), checkpoint="memory")
with open(sys.argv[1]) as f:
    event = json.load(f)
print(json.dumps({"answer": handler(event, None), "records": len(seen)}))
"""  # no close(), no atexit: the process just ends


def test_make_handler_closes_its_clients_at_exit(sandbox: TrailSandbox, tmp_path: Path) -> None:
    from test_lambda import received_as_lambda_event

    sandbox.deliver(make_records(4, seed=31))
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(received_as_lambda_event(sandbox)))
    script = tmp_path / "invoke.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="default", PYTHONDEVMODE="1")
    proc = subprocess.run([sys.executable, str(script), str(event_file)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"answer": {"batchItemFailures": []}, "records": 4}
    assert "Unclosed" not in proc.stderr, proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr
