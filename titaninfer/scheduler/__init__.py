"""Continuous batching: which requests run each step, with how many tokens, in which blocks."""

from titaninfer.scheduler.request import Request, RequestStatus
from titaninfer.scheduler.scheduler import Scheduler

__all__ = ["Request", "RequestStatus", "Scheduler"]
