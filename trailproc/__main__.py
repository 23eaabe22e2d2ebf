"""`python -m trailproc`: the same command line as `trailproc`."""

from ._cli import main

main()
