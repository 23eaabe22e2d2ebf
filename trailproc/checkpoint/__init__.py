"""Checkpoint stores: where "done", "in progress at record N" and "leased by whom" live.

`open_store` turns a user-facing spec string into a store:

* ``None`` or ``"sqlite"``: ``<state_dir>/checkpoints.sqlite3``
* ``"sqlite:///var/lib/trailproc/cp.db"``: that absolute path (``sqlite:////abs`` also works)
* ``"sqlite://relative/cp.db"`` or ``"sqlite:relative/cp.db"``: relative to the working directory
* ``"memory"``: in-process only, forgotten on exit
* ``"dynamodb://TABLE"``, optionally ``"dynamodb://TABLE?create=true&ttl_days=7"``

``ttl_days`` (default 30) is how long a completed file stays remembered, in SQLite
(``"sqlite?ttl_days=7"``, ``"sqlite:///abs/cp.db?ttl_days=7"``) as in DynamoDB (its TTL).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._base import (
    CheckpointStore,
    Claim,
    ClaimState,
    FileId,
    KeyValueStore,
    LeaseLost,
    LeaseStore,
    StateLost,
)
from ._schema import SchemaTooNew

if TYPE_CHECKING:
    from ._dynamodb import DynamoDBStore
    from ._memory import MemoryStore
    from ._sqlite import SqliteStore

__all__ = [
    "CheckpointStore",
    "Claim",
    "ClaimState",
    "DynamoDBStore",
    "FileId",
    "KeyValueStore",
    "LeaseLost",
    "LeaseStore",
    "MemoryStore",
    "SchemaTooNew",
    "SqliteStore",
    "StateLost",
    "open_store",
]

DEFAULT_SQLITE_NAME = "checkpoints.sqlite3"

# Each store is imported when first named: `trailproc process` (memory store) never
# loads sqlite3 or botocore, `trailproc run` with SQLite never loads botocore.
_LAZY = {"DynamoDBStore": "._dynamodb", "MemoryStore": "._memory", "SqliteStore": "._sqlite"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


ACCEPTED_FORMS = (
    "'sqlite' (default: <state dir>/checkpoints.sqlite3), 'sqlite:///ABSOLUTE/PATH.db', "
    "'sqlite://RELATIVE/PATH.db' (option: '?ttl_days=N'), 'memory', 'dynamodb://TABLE' "
    "(options: '?create=true&ttl_days=N')"
)

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"invalid checkpoint store {spec!r}: {why}; accepted forms: {ACCEPTED_FORMS}")


def _sqlite_path(spec: str, rest: str) -> Path:
    # "sqlite:" + "//" (empty authority) + path; "sqlite:////abs" is the same as "sqlite:///abs".
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("/"):
        rest = "/" + rest.lstrip("/")
    if not rest:
        raise _bad(spec, "no database path after 'sqlite:'")
    return Path(rest)


def _options(spec: str, query: str, known: tuple[str, ...]) -> dict[str, Any]:
    """The ``?name=value&...`` options of a spec, checked: create (bool), ttl_days (> 0)."""
    from urllib.parse import parse_qsl

    out: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in known:
            raise _bad(spec, f"unknown option {name!r} (known: {', '.join(known)})")
        if name == "create":
            if value.lower() not in _TRUE | _FALSE:
                raise _bad(spec, f"create={value!r} is not true or false")
            out[name] = value.lower() in _TRUE
        elif name == "ttl_days":
            try:
                ttl_days = float(value)
            except ValueError:
                raise _bad(spec, f"ttl_days={value!r} is not a number") from None
            if not ttl_days > 0 or ttl_days == float("inf"):
                raise _bad(spec, "ttl_days must be a positive number of days")
            out[name] = ttl_days
    return out


def _open_dynamodb(spec: str, aws_requests: Any, client_options: dict[str, str]) -> DynamoDBStore:
    from urllib.parse import urlsplit

    from ._dynamodb import DynamoDBStore

    parts = urlsplit(spec)
    table = parts.netloc
    if parts.path not in ("", "/") or parts.fragment:
        raise _bad(spec, "expected dynamodb://TABLE with nothing after the table name but ?options")
    if not _TABLE_NAME.match(table):
        raise _bad(spec, f"{table!r} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
    options = _options(spec, parts.query, ("create", "ttl_days"))
    return DynamoDBStore(table, ttl_days=options.get("ttl_days", 30.0),
                         create_table=options.get("create", False),
                         aws_requests=aws_requests, **client_options)  # fmt: skip


def open_store(
    spec: str | None,
    state_dir: str | os.PathLike[str],
    *,
    aws_requests: Any = None,
    profile: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> CheckpointStore:
    """The checkpoint store a spec string names (see the module docstring for the forms).
    `aws_requests`: where a store in an AWS service counts its requests (a counter
    labelled service and operation, as `Metrics.aws_requests`; see `DynamoDBStore`).
    `profile`, `region`, `endpoint_url`: the AWS settings of a store in an AWS service
    (as the run's other clients use them; unset: the environment's).

    Raises ValueError, naming the accepted forms, for anything else.
    """
    text = (spec or "sqlite").strip()
    # A '?' starts the options ("sqlite?ttl_days=7"), so it cannot be part of a path.
    head, _, query = text.partition("?")
    scheme, sep, rest = head.partition(":")
    if scheme.lower() == "sqlite":
        from ._sqlite import DEFAULT_TTL_DAYS, SqliteStore

        ttl_days = _options(text, query, ("ttl_days",)).get("ttl_days", DEFAULT_TTL_DAYS)
        if not sep:
            return SqliteStore(Path(state_dir) / DEFAULT_SQLITE_NAME, ttl_days=ttl_days)
        return SqliteStore(_sqlite_path(text, rest), ttl_days=ttl_days)
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme == "memory" and rest in ("", "//"):
        from ._memory import MemoryStore

        return MemoryStore()
    if scheme == "dynamodb" and rest.startswith("//"):
        client_options = {"profile": profile, "region": region, "endpoint_url": endpoint_url}
        chosen = {name: value for name, value in client_options.items() if value}
        return _open_dynamodb(text, aws_requests, chosen)
    raise _bad(text, "unknown kind of store")
