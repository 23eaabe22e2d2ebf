"""How every sample runs: on a queue, on local files, or (no arguments) on sample data.

python samples/tail.py                        # sample deliveries on a local moto server
                                              # (needs moto: pip install '.[demo]')
python samples/tail.py --queue-url URL        # a real queue (boto3 credentials chain)
python samples/tail.py path/to/logs/          # local .json.gz files, no AWS
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import trailproc


def main(processor: trailproc.EventProcessor, description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("paths", nargs="*", help="local log files or folders")
    parser.add_argument("--queue-url", help="poll this SQS queue (Ctrl-C to stop)")
    args = parser.parse_args()
    trailproc.configure_logging("warning")
    if args.queue_url:
        trailproc.run(processor, queue_url=args.queue_url)
    elif args.paths:
        trailproc.process_paths(args.paths, processor)
    else:
        from trailproc.testing import run_on_sample_data

        asyncio.run(run_on_sample_data(processor, files=3, records=200,
                                       echo=lambda m: print(m, file=sys.stderr)))  # fmt: skip
