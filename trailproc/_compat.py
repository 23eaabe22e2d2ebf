"""Module paths of trailproc 0.1, kept importable for one minor version.

trailproc 0.2 made every module outside the public ones (`trailproc`,
`trailproc.aws_lambda`, `trailproc.checkpoint`, `trailproc.integrity`,
`trailproc.testing`) private. Code written against 0.1 imported from the old paths,
as the 0.1 docs and samples did (`from trailproc.observe import get_logger`). Those
imports still work: an import hook serves each old path as a thin module that hands out
the same objects, with a `DeprecationWarning` naming where the name lives now. The old
paths go away in 0.3.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType
from typing import Any

REMOVED_IN = "0.3"

# Old module path -> the private module that holds its code now.
MOVED: dict[str, str] = {
    "trailproc.processor": "trailproc._pipeline.processor",
    "trailproc.trust": "trailproc._pipeline.trust",
    "trailproc.sources.gaps": "trailproc._pipeline.gaps",
    "trailproc.integrity.inline": "trailproc._pipeline.digests",
    "trailproc.integrity.testing": "trailproc.integrity._testing",
    "trailproc.integrity.cli": "trailproc.integrity._cli",
    "trailproc.integrity.keys": "trailproc.integrity._keys",
    "trailproc.integrity.model": "trailproc.integrity._model",
    "trailproc.integrity.signing": "trailproc.integrity._signing",
    "trailproc.integrity.storage": "trailproc.integrity._storage",
    "trailproc.integrity.validator": "trailproc.integrity._validator",
    "trailproc.checkpoint.base": "trailproc.checkpoint._base",
    "trailproc.checkpoint.dynamodb": "trailproc.checkpoint._dynamodb",
    "trailproc.checkpoint.memory": "trailproc.checkpoint._memory",
    "trailproc.checkpoint.schema": "trailproc.checkpoint._schema",
    "trailproc.checkpoint.sqlite": "trailproc.checkpoint._sqlite",
}
# Top-level modules and packages of 0.1: `trailproc.X` (and its submodules) is now
# `trailproc._X`.
_TOP = (
    "app", "audit", "aws", "backfill", "backfill_cli", "check_cli", "cli", "cli_common",
    "config", "demo", "enqueue", "errors", "history_cli", "memory", "observe", "parallel",
    "progress", "quarantine_cli", "recovery_cli", "redrive", "restore", "runtime",
    "sandbox", "timeparse", "trust", "watch_cli", "ops", "pipeline", "ports", "sources",
)  # fmt: skip

# Packages whose private name is not just `_` + the old one.
_RENAMED = {"sources": "_roads"}

# Where the warning sends the reader: the first public module exporting the name.
_PUBLIC = ("trailproc", "trailproc.testing", "trailproc.checkpoint", "trailproc.integrity")


def _private_path(old: str) -> str | None:
    if old in MOVED:
        return MOVED[old]
    parts = old.split(".")
    if len(parts) >= 2 and parts[0] == "trailproc" and parts[1] in _TOP:
        return ".".join(["trailproc", _RENAMED.get(parts[1], "_" + parts[1]), *parts[2:]])
    return None


def public_home(name: str) -> str | None:
    """The public module a name is exported from, if any (read from their `__all__`;
    imported by name only when an old path is used, so this module stays a foundation)."""
    for module in _PUBLIC:
        if name in getattr(importlib.import_module(module), "__all__", ()):
            return module
    return None


class _MovedModule(ModuleType):
    """An old path: every attribute comes from the private module, with a warning."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(old)
        self.__dict__["_compat_new"] = new
        self.__dict__["__path__"] = []  # lets old submodule paths import through here

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        new = self.__dict__["_compat_new"]
        value = getattr(importlib.import_module(new), name)
        home = public_home(name)
        where = f"import it from {home}" if home else f"it is private now ({new}.{name})"
        warnings.warn(
            f"{self.__name__} is deprecated and goes away in trailproc {REMOVED_IN}: {where}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__dict__["_compat_new"]))


class _Loader:
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: Any) -> ModuleType:
        return _MovedModule(spec.name, self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the attributes come from the private module on first use."""


class MovedModuleFinder:
    """On `sys.meta_path`: answers only for the 0.1 module paths."""

    @staticmethod
    def find_spec(fullname: str, path: Any = None, target: Any = None) -> Any:
        if not fullname.startswith("trailproc."):
            return None
        new = _private_path(fullname)
        if new is None:
            return None
        import importlib.util
        from importlib.machinery import ModuleSpec

        if importlib.util.find_spec(new) is None:  # never a module: no alias either
            return None

        return ModuleSpec(fullname, _Loader(new), is_package=True)  # type: ignore[arg-type]


def install() -> None:
    # First in line: a folder left behind by an upgrade (`trailproc/pipeline/__pycache__`)
    # would otherwise be imported as an empty namespace package.
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
