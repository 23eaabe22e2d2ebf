"""`process --jobs auto` is the default, and the docs a newcomer reads say so."""

from __future__ import annotations

from pathlib import Path

from trailproc._cli import main

REPO = Path(__file__).resolve().parent.parent


def test_jobs_auto_is_the_default_of_process() -> None:
    process = main.commands["process"]  # type: ignore[attr-defined]
    jobs = next(option for option in process.params if option.name == "jobs")
    assert jobs.default == "auto"


def test_jobs_auto_is_documented_as_the_default() -> None:
    reference = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "| `trailproc process --jobs N\\|auto` | `auto` |" in reference
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "The default, `--jobs auto`, uses one process per core" in readme
