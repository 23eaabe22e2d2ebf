"""The shape of the code: no function in trailproc over 60 lines, and the ruff rules that
hold complexity (C901) and argument counts (PLR0913, PLR0917) stay on."""

from __future__ import annotations

import ast
from pathlib import Path

import trailproc

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

MAX_LINES = 60
PACKAGE = Path(trailproc.__file__).resolve().parent
REPO = PACKAGE.parent


def long_functions(source: str, path: str, limit: int = MAX_LINES) -> list[str]:
    """`path:line name (N lines)` for each function or method in `source` longer than
    `limit`, counted from its `def` line to its last line (decorators not counted);
    nested functions are measured on their own too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{path}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_trailproc_is_over_60_lines() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        too_long += long_functions(path.read_text(encoding="utf-8"), relative)
    assert too_long == [], (
        f"functions over {MAX_LINES} lines; split each into parts named for what they do:\n"
        + "\n".join(too_long)
    )


def _body(lines: int, indent: int = 4) -> str:
    return (" " * indent + "x = 1\n") * lines


def test_the_line_count_runs_from_def_to_the_last_line_of_every_kind_of_function() -> None:
    assert long_functions("@decorated\ndef sixty():\n" + _body(59), "m.py") == []
    assert long_functions("def sixty_one():\n" + _body(60), "m.py") == [
        "m.py:1 sixty_one (61 lines)"
    ]
    method = "class C:\n    async def method(self):\n" + _body(60, indent=8)
    assert long_functions(method, "m.py") == ["m.py:2 method (61 lines)"]
    nested = "def outer():\n    def inner():\n" + _body(60, indent=8)
    assert long_functions(nested, "m.py") == [
        "m.py:1 outer (62 lines)",
        "m.py:2 inner (61 lines)",
    ]


def test_ruff_keeps_the_complexity_and_argument_rules_on() -> None:
    lint = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]
    lint = lint["lint"]
    assert {"C901", "PLR0913", "PLR0917"} <= set(lint["select"])
    assert lint["mccabe"]["max-complexity"] <= 15
    assert lint["pylint"]["max-args"] <= 8
    assert lint["pylint"]["max-positional-args"] <= 5
    for path, rules in lint.get("per-file-ignores", {}).items():
        assert "C901" not in rules, f"{path} is exempt from the complexity limit"
        assert not {"PLR0913", "PLR0917"} & set(rules), f"{path} is exempt from argument limits"
