"""`trailproc.testing`'s own example runs as written: a processor gets every record of a
delivery made on a local moto server."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import trailproc.testing

REPO = Path(__file__).resolve().parent.parent


def test_the_module_example_hands_over_every_record(tmp_path: Path) -> None:
    doc = trailproc.testing.__doc__ or ""
    example = textwrap.dedent(doc.split("\n\n", 1)[1].split("\n`DigestChainSigner`")[0])
    assert "box.deliver(make_records(100))" in example
    script = tmp_path / "example.py"
    script.write_text(
        "import trailproc\n"
        "class MyProcessor(trailproc.EventProcessor):\n"
        "    seen = 0\n"
        "    def process(self, events):\n"
        "        MyProcessor.seen += len(events)\n"
        + re.sub(r"#.*", "", example)
        + "\nprint('handed over', MyProcessor.seen)\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "TRAILPROC_LOG_LEVEL": "warning"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "handed over 100" in done.stdout
