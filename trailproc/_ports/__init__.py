"""Ports that belong to trailproc: the few outside things its state machines use.

Production code runs on the AWS-backed queue, S3 and the system clock; fast unit tests
run the same state machines and the file pipeline on the in-memory queue, in-memory
objects and a clock they move by hand.
"""

from .clock import Clock, ManualClock, SystemClock
from .objects import MemoryObjects, ObjectPort, S3Objects
from .queue import AwsQueue, MemoryQueue, QueuePort

__all__ = [
    "AwsQueue",
    "Clock",
    "ManualClock",
    "MemoryObjects",
    "MemoryQueue",
    "ObjectPort",
    "QueuePort",
    "S3Objects",
    "SystemClock",
]
