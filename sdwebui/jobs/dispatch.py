"""Which queued job an idle worker of a pool takes: per-user round robin, then model affinity.

Pure functions over the queue's jobs and what each worker holds, so the rules are tested without a pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sdwebui.jobs.queue import Job


@dataclass(frozen=True)
class Wants:
    """What a job needs loaded on the worker that runs it."""

    checkpoint: str | None = None  # the checkpoint file (None: any; jobs that load nothing run anywhere)
    loras: frozenset[str] = frozenset()  # the LoRA files its prompt names (resolved paths)


@dataclass(frozen=True)
class WorkerView:
    """What the dispatcher knows of one worker when it chooses."""

    index: int
    loaded: frozenset[str]  # checkpoint files it holds
    idle: bool  # ready and running nothing
    loras: Mapping[str, frozenset[str]] = field(
        default_factory=dict
    )  # checkpoint file -> LoRA files read for it


def fit(worker: WorkerView, wants: Wants) -> tuple[bool, int]:
    """How well `worker` suits a job: (holds its checkpoint, how many of its LoRAs it holds for that
    checkpoint); compared as a tuple, so the checkpoint (a load of seconds) outweighs any LoRA count. A job
    that names no checkpoint runs on whichever the worker has: its LoRAs count for the best of those."""
    if wants.checkpoint is None:
        return True, max((len(wants.loras & held) for held in worker.loras.values()), default=0)
    if wants.checkpoint not in worker.loaded:
        return False, 0
    return True, len(wants.loras & worker.loras.get(wants.checkpoint, frozenset()))


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
    wanted: Callable[[Job], Wants],
) -> Job | None:
    """The job `worker` takes from `order` (already in fair order), or None to leave them all to others.

    First the first job whose checkpoint it holds and for which no other idle worker fits better (holds
    more of its LoRAs). Else the first job no other idle worker fits better: loading its checkpoint here
    keeps the queue moving, where waiting would leave this worker idle. A job that an idle worker holding
    more of what it needs can take is left to that worker."""
    idle = [other for other in others if other.idle and other.index != worker.index]

    def left_to_another(wants: Wants, mine: tuple[bool, int]) -> bool:
        return any(fit(other, wants) > mine for other in idle)

    fits = [(job, wanted(job)) for job in order]
    for job, wants in fits:
        mine = fit(worker, wants)
        if mine[0] and not left_to_another(wants, mine):
            return job
    for job, wants in fits:
        if not left_to_another(wants, fit(worker, wants)):
            return job
    return None


def choose_ahead(order: Sequence[Job], worker: WorkerView, wanted: Callable[[Job], Wants]) -> Job | None:
    """The job a busy worker takes to run after its current one (sent ahead, so that it starts there the
    moment the current one ends), or None. Only a job it fits (holds its checkpoint, or one that names
    none), the first in fair order: loading another checkpoint for a job that another worker may take
    sooner would not keep the queue moving. The caller asks only when no worker is idle."""
    for job in order:
        if fit(worker, wanted(job))[0]:
            return job
    return None
