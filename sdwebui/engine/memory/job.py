"""A job's placement: its plan from the memory settings and the job's size, measured free memory included."""

from __future__ import annotations

import logging

from sdwebui.engine.memory.placement import Placement
from sdwebui.engine.memory.plan import JobSize, free_device_bytes, plan_placement
from sdwebui.engine.memory.settings import MemorySettings
from sdwebui.models.model import LoadedModel

log = logging.getLogger(__name__)


def job_placement(
    model: LoadedModel, width: int, height: int, batch_size: int, settings: MemorySettings
) -> Placement:
    """The largest pass decides (hires fix's second pass is the one that needs the memory)."""
    plan = plan_placement(
        model, settings, JobSize(width, height, batch_size), free_device_bytes(model.device)
    )
    if plan.moves_between_stages:
        log.info("memory: %s (%s)", plan.mode, plan.reason)
    return Placement(model, plan, settings)
