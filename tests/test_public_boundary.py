"""The public boundary: five public modules, private ones named `_x`, old paths deprecated."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import warnings

import pytest

import trailproc

PUBLIC_MODULES = [
    "trailproc",
    "trailproc.aws_lambda",
    "trailproc.checkpoint",
    "trailproc.integrity",
    "trailproc.testing",
]
# Modules that are run, not imported (`python -m trailproc`).
ENTRY_POINTS = {"trailproc.__main__"}


def test_every_module_outside_the_public_ones_is_private() -> None:
    public = set(PUBLIC_MODULES) | ENTRY_POINTS
    leaked = []
    for info in pkgutil.walk_packages(trailproc.__path__, "trailproc."):
        if info.name in public:
            continue
        parts = info.name.split(".")[1:]
        if not any(part.startswith("_") for part in parts):
            leaked.append(info.name)
    assert leaked == [], f"modules that look public but are not in the public list: {leaked}"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_modules_export_every_listed_name_without_warnings(module: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        mod = importlib.import_module(module)
        names = mod.__all__
        assert len(names) == len(set(names)), "a name listed twice"
        for name in names:
            assert getattr(mod, name) is not None, name


# An old path, a name imported from it, and the public home the warning names.
OLD_PATHS = [
    ("trailproc.processor", "EventProcessor", "trailproc"),
    ("trailproc.processor", "silence_closed_stdout", "trailproc"),
    ("trailproc.pipeline.processor", "Handlers", "trailproc"),
    ("trailproc.pipeline.digests", "HashCheck", "trailproc.integrity"),
    ("trailproc.integrity.inline", "PendingDigestChecks", "trailproc.integrity"),
    ("trailproc.integrity.testing", "DigestChainSigner", "trailproc.testing"),
    ("trailproc.observe", "get_logger", "trailproc"),
    ("trailproc.observe", "configure_logging", "trailproc"),
    ("trailproc.demo", "run_on_sample_data", "trailproc.testing"),
    ("trailproc.errors", "DigestMismatch", "trailproc"),
    ("trailproc.config", "load_config", "trailproc"),
    ("trailproc.app", "run_async", "trailproc"),
    ("trailproc.sandbox", "TrailSandbox", "trailproc.testing"),
    ("trailproc.checkpoint.sqlite", "SqliteStore", "trailproc.checkpoint"),
]


@pytest.mark.parametrize(("old", "name", "home"), OLD_PATHS)
def test_old_paths_hand_out_the_same_object_with_a_warning_naming_its_home(
    old: str, name: str, home: str
) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning) as caught:
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(home), name)
    message = str(caught[0].message)
    assert old in message and f"import it from {home}" in message and "0.3" in message
    assert caught[0].filename == __file__, "the warning points at the caller's line"


def test_an_old_path_of_a_private_name_says_it_is_private_now() -> None:
    module = importlib.import_module("trailproc.ops.servers")
    private = r"private now \(trailproc\._ops\.servers\.serve_ops\)"
    with pytest.warns(DeprecationWarning, match=private):
        module.serve_ops  # noqa: B018


def test_from_import_of_an_old_path_warns_in_a_fresh_interpreter() -> None:
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n"
        "    from trailproc.observe import get_logger\n"
        "except DeprecationWarning as w:\n"
        "    print('warned:', w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "warned: trailproc.observe is deprecated" in out.stdout, out.stderr


def test_names_that_were_never_modules_are_not_invented() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("trailproc.no_such_module")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("trailproc.integrity.no_such_module")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("trailproc.pipeline.no_such_module")


def test_public_errors_are_named_where_users_import_them() -> None:
    for name in trailproc.__all__:
        value = getattr(trailproc, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert value.__module__ == "trailproc", name


def test_python_dash_m_trailproc_runs_the_command_line() -> None:
    out = subprocess.run([sys.executable, "-m", "trailproc", "--version"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert trailproc.__version__ in out.stdout


def test_the_old_sources_package_is_the_roads_package_now() -> None:
    module = importlib.import_module("trailproc.sources.messages")
    with pytest.warns(
        DeprecationWarning, match=r"private now \(trailproc\._roads\.messages\.Verdict\)"
    ):
        module.Verdict  # noqa: B018
