"""Per-namespace GPU quotas with cohorts (Kueue-style borrowing of idle quota), checked as jobs are admitted."""

from __future__ import annotations

from collections import defaultdict

from gensched.sched.model import Quota, RunningJob, WaitingJob

EPS = 1e-9


class QuotaBook:
    """GPUs held and GPU-hours started per namespace, updated as the cycle admits jobs."""

    def __init__(self, quotas: dict[str, Quota], running: list[RunningJob]) -> None:
        self.quotas = quotas
        self.gpus: dict[str, float] = defaultdict(float)
        self.hours: dict[str, float] = defaultdict(float)
        counted = set(quotas) | {q.namespace for q in quotas.values()}
        if counted:  # only namespaces with a quota are ever read: no pass over running work without quotas
            for r in running:
                if not r.evicting and r.namespace in counted:
                    self.gpus[r.namespace] += r.gpus
        self.cohorts: dict[str, list[Quota]] = defaultdict(list)
        for q in quotas.values():
            if q.cohort:
                self.cohorts[q.cohort].append(q)

    def never(self, job: WaitingJob) -> str | None:
        """A quota the job can never fit in (even with all its cohort's quota), with the fix."""
        q = self.quotas.get(job.namespace)
        if q is None:
            return None
        if q.max_gpus is not None and job.gpus > self._ceiling(q) + EPS:
            return (f"asks for {job.gpus:g} GPUs but namespace {job.namespace}'s quota allows at most "
                    f"{self._ceiling(q):g}: ask for fewer GPUs or raise maxGpus in the SchedulingPolicy's quotas")
        if q.max_gpu_hours is not None and job.gpu_hours > q.max_gpu_hours + EPS:
            return (f"needs about {job.gpu_hours:.2f} GPU-hours but namespace {job.namespace} may use "
                    f"{q.max_gpu_hours:g} per period: shorten the job or raise maxGpuHours")
        return None

    def _ceiling(self, q: Quota) -> float:
        assert q.max_gpus is not None
        if q.borrowing and q.cohort:
            return sum(m.max_gpus or 0.0 for m in self.cohorts[q.cohort])
        return q.max_gpus

    def check(self, job: WaitingJob) -> str | None:
        """Why the job's namespace may not start it now, or None."""
        q = self.quotas.get(job.namespace)
        if q is None:
            return None
        if q.max_gpu_hours is not None:
            used = q.used_gpu_hours + self.hours[job.namespace]
            if used + job.gpu_hours > q.max_gpu_hours + EPS or used >= q.max_gpu_hours - EPS:
                return (f"namespace {job.namespace} used {used:.2f} of its {q.max_gpu_hours:g} GPU-hours this "
                        "period: it starts when the period rolls over or maxGpuHours is raised")
        if q.max_gpus is None:
            return None
        held = self.gpus[job.namespace]
        if held + job.gpus <= q.max_gpus + EPS:
            return None
        if q.borrowing and q.cohort:
            members = self.cohorts[q.cohort]
            total = sum(m.max_gpus or 0.0 for m in members)
            # idle quota of a member is what it does not use of its own nominal quota
            used = sum(max(self.gpus[m.namespace], 0.0) for m in members)
            if used + job.gpus <= total + EPS:
                return None
            return (f"namespace {job.namespace} holds {held:g} of {q.max_gpus:g} GPUs and cohort {q.cohort} has "
                    f"{max(total - used, 0):g} idle GPUs to lend; needs {job.gpus:g}")
        return (f"namespace {job.namespace} holds {held:g} of its {q.max_gpus:g} GPU quota and needs {job.gpus:g} "
                "more: it starts when its other jobs finish, or raise maxGpus")

    def admit(self, job: WaitingJob) -> None:
        self.gpus[job.namespace] += job.gpus
        self.hours[job.namespace] += job.gpu_hours

    def release(self, job: RunningJob) -> None:
        self.gpus[job.namespace] -= job.gpus
