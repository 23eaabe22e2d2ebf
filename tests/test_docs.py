"""The documentation site builds with `mkdocs build --strict` (broken links fail) and
names only files that exist."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def test_docs_build_strict(tmp_path: Path) -> None:
    """Every page in the nav exists and every link resolves (strict: warnings fail)."""
    from mkdocs.commands import build
    from mkdocs.config import load_config

    work = tmp_path / "src"
    shutil.copytree(DOCS, work / "docs")
    shutil.copy(REPO / "mkdocs.yml", work / "mkdocs.yml")
    config = load_config(str(work / "mkdocs.yml"), site_dir=str(tmp_path / "site"), strict=True)
    build.build(config)
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "guarantees" / "index.html").is_file()


def test_docs_name_only_existing_repository_files() -> None:
    # Files outside docs/ cannot be links in the site; they are named in code spans and
    # must exist.
    pattern = re.compile(r"`((?:samples|trailproc)/[\w./-]+\.(?:py|yaml|tf))`")
    named = {
        (page.name, match)
        for page in DOCS.glob("*.md")
        for match in pattern.findall(page.read_text(encoding="utf-8"))
    }
    assert named, "expected the docs to name the samples"
    missing = sorted(f"{page}: {path}" for page, path in named if not (REPO / path).is_file())
    assert not missing, missing


def test_generated_pages_are_in_the_nav() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        if page.name == "TEAM.md":
            continue
        assert page.name in nav, f"docs/{page.name} is not in mkdocs.yml nav"
