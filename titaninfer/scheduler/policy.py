"""Which waiting request to admit first and which running request to preempt first.

Both orders come from one sort key (smaller = more deserving). FCFS uses arrival time;
the priority policy uses the request's priority minus an aging credit for the time it has
waited, so a low-priority request keeps gaining until it is served.
"""

from __future__ import annotations

from typing import Protocol

from titaninfer.scheduler.request import Request


class SchedulingPolicy(Protocol):
    def key(self, req: Request, now: float) -> tuple[float, float]:
        """Sort key: requests with smaller keys are admitted first and preempted last."""
        ...


class FCFSPolicy:
    def key(self, req: Request, now: float) -> tuple[float, float]:
        return (0.0, req.arrival_time)


class PriorityPolicy:
    def __init__(self, aging_per_s: float) -> None:
        self.aging_per_s = aging_per_s

    def key(self, req: Request, now: float) -> tuple[float, float]:
        waited = max(0.0, now - req.arrival_time)
        return (req.priority - self.aging_per_s * waited, req.arrival_time)


def make_policy(name: str, aging_per_s: float) -> SchedulingPolicy:
    if name == "fcfs":
        return FCFSPolicy()
    if name == "priority":
        return PriorityPolicy(aging_per_s)
    raise ValueError(f"unknown scheduling policy {name!r}")
