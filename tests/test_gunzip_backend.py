"""gunzip backends: isal (a default dependency) when installed, the stdlib's zlib
otherwise, with the same results and the same errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from trailproc._pipeline.gunzip import BACKEND

# Run in a fresh interpreter where `import isal` fails, as on a platform without wheels.
_WITHOUT_ISAL = textwrap.dedent("""
    import gzip, json, sys
    sys.modules["isal"] = None  # makes `import isal` raise ImportError
    from trailproc._errors import TrailprocError
    from trailproc._pipeline.decode import decode_log
    from trailproc._pipeline.gunzip import BACKEND
    body = json.dumps({"Records": [{"eventID": str(i)} for i in range(300)]}).encode()
    data = gzip.compress(body) + gzip.compress(b"")  # two members, as some writers do
    records, size = decode_log(data, max_bytes=1 << 20)
    try:
        decode_log(data[:-20] + b"garbage-garbage-garb", max_bytes=1 << 20)
        corrupt = "accepted"
    except TrailprocError as exc:
        corrupt = type(exc).__name__
    try:
        decode_log(data, max_bytes=1000)
        bomb = "accepted"
    except TrailprocError as exc:
        bomb = type(exc).__name__
    print(json.dumps({"backend": BACKEND, "records": len(records), "size": size,
                      "corrupt": corrupt, "bomb": bomb, "isal": "isal" in sys.modules
                      and sys.modules["isal"] is not None}))
""")


def _run(code: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_isal_is_the_default_backend() -> None:
    pytest.importorskip("isal")
    assert BACKEND == "isal"


def test_without_isal_the_stdlib_decodes_the_same_and_refuses_the_same() -> None:
    without = _run(_WITHOUT_ISAL)
    with_default = _run(_WITHOUT_ISAL.replace('sys.modules["isal"] = None', "pass"))
    assert without["backend"] == "zlib" and without["isal"] is False
    assert without["records"] == with_default["records"] == 300
    assert without["size"] == with_default["size"]
    assert without["corrupt"] == with_default["corrupt"] != "accepted"
    assert without["bomb"] == with_default["bomb"] == "DecompressedTooLarge"
