"""Starting or joining the Ray cluster of a worker pool (`--workers N`, `--ray-address ADDR`).

Ray's dashboard and job APIs have no authentication, so a local Ray is bound to 127.0.0.1 with the
dashboard off, and a non-loopback address was already refused by the flags unless --insecure
(sdwebui.config.flags.check_security). Ray is imported only here and in the pool, only when asked for.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdwebui.config.flags import uses_cpu_for_all

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_STEP_TIMEOUT = 300.0


@dataclass(frozen=True)
class PoolSettings:
    workers: int | None  # None with an address: one per GPU of the cluster
    address: str | None  # None: start a local Ray
    use_gpu: bool
    step_timeout: float  # seconds without progress before a worker counts as dead
    temp_dir: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PoolSettings | None:
        """None when no pool is asked for (the embedded default)."""
        workers, address = getattr(args, "workers", None), getattr(args, "ray_address", None)
        if not workers and not address:
            return None
        return cls(
            workers=workers,
            address=address,
            use_gpu=not uses_cpu_for_all(args),
            step_timeout=float(getattr(args, "worker_step_timeout", None) or DEFAULT_STEP_TIMEOUT),
            temp_dir=getattr(args, "ray_temp_dir", None),
        )


@dataclass
class Cluster:
    ray: Any  # the ray module
    started: bool  # we started it (and shut it down)
    temp_dir: str | None


def connect(settings: PoolSettings) -> Cluster:
    import ray

    # workers import sdwebui from this checkout (on other nodes: the same path; see the README)
    runtime_env = {"env_vars": {"PYTHONPATH": str(REPO_DIR), "OMP_NUM_THREADS": "1"}}
    if ray.is_initialized():
        return Cluster(ray, started=False, temp_dir=None)
    if settings.address:
        log.info("joining the Ray cluster at %s", settings.address)
        ray.init(address=settings.address, runtime_env=runtime_env, configure_logging=False)
        return Cluster(ray, started=False, temp_dir=None)
    temp_dir = settings.temp_dir or tempfile.mkdtemp(prefix="sdwebui-ray-")
    workers = settings.workers or 1
    ray.init(
        address="local",
        num_cpus=max(workers, os.cpu_count() or 1),
        num_gpus=None if settings.use_gpu else 0,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        runtime_env=runtime_env,
        configure_logging=False,
        log_to_driver=True,
    )
    log.info("started a local Ray (127.0.0.1, no dashboard, temp dir %s)", temp_dir)
    return Cluster(ray, started=True, temp_dir=temp_dir)


def worker_count(cluster: Cluster, settings: PoolSettings) -> tuple[int, bool]:
    """(workers, on GPUs): one per GPU of the cluster unless --workers says; CPU workers with --use-cpu
    all or on a cluster without GPUs. More GPU workers than GPUs would wait forever for one: refused."""
    gpus = int(cluster.ray.cluster_resources().get("GPU", 0)) if settings.use_gpu else 0
    if settings.use_gpu and not gpus:
        log.warning("no GPU in the Ray cluster: the workers run on the CPU")
    count = settings.workers or max(1, gpus)
    if gpus and count > gpus:
        if cluster.started:
            cluster.ray.shutdown()
        raise RuntimeError(
            f"--workers {count} needs {count} GPUs (one each) but the Ray cluster has {gpus}; "
            f"give --workers {gpus} or fewer, or --use-cpu all for CPU workers"
        )
    return count, bool(gpus)
