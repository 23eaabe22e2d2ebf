"""A Lambda cold start loads only what one invocation needs: botocore's S3 client, not
the aioboto3 stack (aiohttp, aiobotocore, aioboto3), and nothing twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_COLD_START = textwrap.dedent("""
    import json, sys
    from trailproc.aws_lambda import make_handler

    runtime = make_handler(lambda event: None, configure_logs=False)
    runtime._run(runtime._ensure_started())
    heavy = ("aiohttp", "aiobotocore", "aioboto3", "boto3", "s3transfer", "prometheus_client")
    print(json.dumps({
        "loaded": sorted(m for m in heavy if m in sys.modules),
        "botocore": "botocore.session" in sys.modules,
        "s3": type(runtime._run(runtime._pipeline.fetcher.objects.client_for("b"))).__name__,
    }))
    runtime.close()
""")


def test_cold_start_builds_the_s3_client_without_the_aioboto3_stack() -> None:
    env = {**os.environ, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _COLD_START], capture_output=True, text=True,
                         timeout=120, env=env, check=True)  # fmt: skip
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"loaded": [], "botocore": True, "s3": "ThreadedS3Client"}
