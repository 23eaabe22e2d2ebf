"""Print one line per CloudTrail event, like `tail -f` for your trail.

From the repository root:
Run stand-alone:          python samples/tail.py [--queue-url URL | PATH...]
Run as a daemon handler:  trailproc run --handler samples.tail:Tail --queue-url URL

In a pipe (`python samples/tail.py | head`), it goes quiet once the reader has gone,
like `cat`: the rest of the events are dropped, and the run ends with status 0.
"""

from __future__ import annotations

import sys

import trailproc


class Tail(trailproc.EventProcessor):
    """Writes `time  region  source:name  principal  [error]` per event to stdout."""

    def __init__(self, stream=None) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream or sys.stdout
        self.reader_gone = False

    def process(self, events: list[trailproc.Event]) -> None:
        if self.reader_gone:
            return
        lines = []
        for e in events:
            error = f"  !{e.error_code}" if e.error_code else ""
            lines.append(
                f"{e.event_time_text or '-':20}  {e.aws_region or '-':14}  "
                f"{(e.event_source or '-').removesuffix('.amazonaws.com')}:{e.event_name or '-'}"
                f"  {e.principal_arn or '-'}{error}\n"
            )
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except BrokenPipeError:
            # The reader (`head`) has gone: nothing more to show. Standard output (and
            # standard error, if it is the same pipe) now go to /dev/null, so nothing
            # fails later, and the run ends normally.
            self.reader_gone = True
            trailproc.silence_closed_stdout()


if __name__ == "__main__":
    from _runner import main

    main(Tail(), __doc__.splitlines()[0])
