"""The container image recipe: what it copies exists, and it runs the daemon safely.

No Docker engine runs here, so the Dockerfile is checked for structure; the wheel it
builds is the same `pip wheel .` that this test performs for real.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "samples" / "deploy" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_the_daemon_unprivileged_with_sigterm() -> None:
    steps = _instructions()
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    words = dict(final)
    assert words["ENTRYPOINT"] == '["trailproc"]' and words["CMD"] == '["run"]'
    assert words["STOPSIGNAL"] == "SIGTERM"
    assert "USER" in words and words["USER"] not in ("root", "0")
    assert "TRAILPROC_OPS_BIND=0.0.0.0" in words["ENV"]
    assert "TRAILPROC_LOG_FORMAT=json" in words["ENV"]


def test_dockerfile_copies_only_what_exists_and_the_wheel_builds(tmp_path: Path) -> None:
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("trailproc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "trailproc/py.typed" in names and "trailproc/_cli.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
