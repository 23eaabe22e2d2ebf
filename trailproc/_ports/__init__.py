"""Ports that belong to trailproc: the few outside things its state machines use.

Production code runs on the AWS-backed queue and the system clock; fast unit tests run
the same state machines on the in-memory queue and a clock they move by hand.
"""

from .clock import Clock, ManualClock, SystemClock
from .queue import AwsQueue, MemoryQueue, QueuePort

__all__ = ["AwsQueue", "Clock", "ManualClock", "MemoryQueue", "QueuePort", "SystemClock"]
