"""The repository's own habits: one release number, a license, a changelog, the
contributor guide and the pre-commit hooks that match CI's checks."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

import trailproc

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent


def test_the_release_number_is_written_once() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, _, name = attr.rpartition(".")
    # setuptools reads the literal without importing the package: it must stay a literal.
    source = (REPO / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    literals = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert literals[name] == trailproc.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", trailproc.__version__)
    hits = [
        path.relative_to(REPO)
        for path in (REPO / "trailproc").rglob("*.py")
        if f'"{trailproc.__version__}"' in path.read_text(encoding="utf-8")
    ]
    assert hits == [Path("trailproc/_version.py")]


def test_import_trailproc_and_its_version_stay_light() -> None:
    script = (
        "import sys, trailproc\n"
        "trailproc.__version__\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'aioboto3', 'aiohttp',"
        " 'importlib.metadata') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_license_is_the_apache_license_pyproject_names() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_changelog_has_an_unreleased_section_first() -> None:
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[([^\]]+)\]", text, flags=re.MULTILINE)
    assert releases and releases[0] == "Unreleased"
    assert "accept_records_in_messages" in text


def test_contributing_names_every_check_ci_and_pre_commit_run() -> None:
    guide = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    entries = {
        hook["id"]: hook["entry"].split()[0] for repo in hooks["repos"] for hook in repo["hooks"]
    }
    assert set(entries) == {"ruff", "ruff-format", "mypy", "lint-imports"}
    bin_dir = Path(sys.executable).parent
    for tool in entries.values():
        assert (bin_dir / tool).exists(), f"{tool} is not installed beside {sys.executable}"
        assert tool in guide
    for heading in ("## Set-up", "## Tests", "## Benchmarks", "## Layers",
                    "## Adding a road", "## Adding a checkpoint store"):  # fmt: skip
        assert heading in guide


def test_layer_contracts_hold() -> None:
    """The import-linter contracts in pyproject.toml (also a pre-commit hook)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " 0 broken" in out.stdout
