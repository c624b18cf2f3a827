"""Which queued job an idle worker of a pool takes: per-user round robin, then model affinity.

Pure functions over the queue's jobs and what each worker holds, so the rules are tested without a pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sdwebui.jobs.queue import Job


@dataclass(frozen=True)
class WorkerView:
    """What the dispatcher knows of one worker when it chooses."""

    index: int
    loaded: frozenset[str]  # checkpoint files it holds
    idle: bool  # ready and running nothing


def fair_order(queued: Sequence[Job], running: Sequence[Job]) -> list[Job]:
    """Round robin between users with queued jobs: a user's k-th waiting job ranks after every other
    user's (k-1)-th, counting the jobs each user already has running; FIFO among equal ranks. Without
    named users (owner None everywhere) this is plain FIFO."""
    served = Counter(job.owner for job in running)
    ranked = []
    for job in sorted(queued, key=lambda job: job.seq):
        ranked.append((served[job.owner], job.seq, job))
        served[job.owner] += 1
    return [job for _, _, job in sorted(ranked, key=lambda entry: (entry[0], entry[1]))]


def choose(
    order: Sequence[Job],
    worker: WorkerView,
    others: Sequence[WorkerView],
    wanted: Callable[[Job], str | None],
) -> Job | None:
    """The job `worker` takes from `order` (already in fair order), or None to leave them all to others.

    First the first job whose checkpoint it already holds (or that names none: jobs that load nothing on
    a worker run anywhere). Else the first job whose checkpoint no other idle worker holds: loading it here
    keeps the queue moving, where waiting would leave this worker idle. A job that an idle worker holding
    its model can take is left to that worker."""
    for job in order:
        model = wanted(job)
        if model is None or model in worker.loaded:
            return job
    for job in order:
        model = wanted(job)
        if not any(other.idle and model in other.loaded for other in others if other.index != worker.index):
            return job
    return None
