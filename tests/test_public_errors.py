"""Every error a user can receive is exported from `trailproc` once, under one name."""

from __future__ import annotations

import importlib
import pkgutil

import trailproc
from trailproc._errors import TrailprocError


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def test_every_trailproc_error_is_exported_under_its_own_name() -> None:
    # Import every module so that every subclass of TrailprocError is defined.
    for info in pkgutil.walk_packages(trailproc.__path__, "trailproc."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    errors = {c for c in _all_subclasses(TrailprocError) if c.__module__.startswith("trailproc")}
    # Checkpoint-store errors belong to the store API, where custom stores import them.
    from trailproc import checkpoint

    for error in sorted(errors, key=lambda c: c.__name__):
        home = checkpoint if issubclass(error, trailproc.CheckpointError) and \
            error is not trailproc.CheckpointError else trailproc  # fmt: skip
        assert getattr(home, error.__name__, None) is error, error
        assert error.__name__ in home.__all__, error
    assert trailproc.TrailprocError in (getattr(trailproc, n) for n in trailproc.__all__)


def test_all_lists_each_name_once() -> None:
    assert len(trailproc.__all__) == len(set(trailproc.__all__))
    for name in trailproc.__all__:
        assert getattr(trailproc, name) is not None
