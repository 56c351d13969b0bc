"""Queue order: priority, then deadline urgency (latest safe start), then age (kube-scheduler's QueueSort)."""

from __future__ import annotations

import math

from gensched.sched.model import WaitingJob


def queue_key(job: WaitingJob, by_priority: bool = True) -> tuple:
    urgency = job.latest_start if job.latest_start is not None else math.inf
    if not by_priority:
        return (job.queued_at, job.key)
    return (-job.priority, urgency, job.queued_at, job.key)


def order(jobs: list[WaitingJob], by_priority: bool = True) -> list[WaitingJob]:
    return sorted(jobs, key=lambda j: queue_key(j, by_priority))
