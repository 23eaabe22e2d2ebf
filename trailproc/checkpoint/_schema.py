"""Schema versions of the checkpoint stores: what a store holds and which code may use it.

Every persistent store (SQLite, DynamoDB) records two numbers beside its data:

* ``schema_version``: the newest schema that has written to the store;
* ``compatible_from``: the oldest schema whose code can still use the store safely.

A change that only *adds* (a new item kind such as leases, listing cursors or audit
state, a new table or index, a new optional attribute) raises ``SCHEMA_VERSION`` and
leaves ``COMPATIBLE_FROM`` alone: older workers ignore what they do not know and keep
working beside newer ones during a rolling deploy. A change to the *meaning* of data
older code reads (a renamed attribute, a new key format for an existing kind) raises
both, so older code refuses the store instead of misreading it.

Opening a store merges the stored pair with this code's pair (the larger of each) and
writes the result back when it grew; a store whose ``compatible_from`` is above this
code's ``SCHEMA_VERSION`` is refused with `SchemaTooNew` before anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import CheckpointError
from .._version import __version__

__all__ = [
    "COMPATIBLE_FROM",
    "SCHEMA_VERSION",
    "SchemaTooNew",
    "StoredSchema",
    "merged_schema",
]

# Schema 1: file items (position, done, lease) and expiring key-values, as in trailproc 0.1.
SCHEMA_VERSION = 1
COMPATIBLE_FROM = 1


@dataclass(frozen=True, slots=True)
class StoredSchema:
    """The versions a store records (see the module docstring)."""

    version: int
    compatible_from: int
    written_by: str = ""  # the trailproc release that last recorded them, when known

    @classmethod
    def current(cls) -> StoredSchema:
        return cls(SCHEMA_VERSION, COMPATIBLE_FROM, __version__)

    def recorded_here(self) -> StoredSchema:
        """The same versions, recorded by this release."""
        return StoredSchema(self.version, self.compatible_from, __version__)


class SchemaTooNew(CheckpointError):
    """The checkpoint store was written by a newer trailproc whose data this one would misread.

    Nothing was read or changed. Upgrade this worker, or point it at another store.
    """

    reason = "checkpoint_schema_too_new"

    def __init__(self, store: str, stored: StoredSchema) -> None:
        by = f" (last recorded by trailproc {stored.written_by})" if stored.written_by else ""
        super().__init__(
            f"checkpoint store {store} has schema version {stored.version}{by}, usable by "
            f"schema {stored.compatible_from} or later; this trailproc {__version__} knows "
            f"schema {SCHEMA_VERSION}, so it refuses the store rather than misread it. "
            "Upgrade trailproc on this worker to the release that wrote the store (or later), "
            "or point it at another store; see 'Rolling deploys' in docs/deploy.md"
        )
        self.store = store
        self.stored = stored


def merged_schema(store: str, stored: StoredSchema) -> StoredSchema | None:
    """The versions to record after this code opens a store holding `stored`.

    Raises `SchemaTooNew` when this code cannot use the store; returns None when
    nothing needs writing (the store already records at least this code's versions).
    """
    if stored.compatible_from > SCHEMA_VERSION:
        raise SchemaTooNew(store, stored)
    if stored.version >= SCHEMA_VERSION and stored.compatible_from >= COMPATIBLE_FROM:
        return None
    return StoredSchema(
        max(stored.version, SCHEMA_VERSION),
        max(stored.compatible_from, COMPATIBLE_FROM),
        __version__,
    )
