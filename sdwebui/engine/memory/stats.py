"""Memory numbers: A1111's /sdapi/v1/memory shape (RAM always, CUDA where there is one) and a job's peak."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Any

import torch


def ram() -> dict[str, Any]:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        available = os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return {"error": "unavailable"}
    total, free = pages * page_size, available * page_size
    return {"free": free, "used": total - free, "total": total}


def process_rss() -> int | None:
    """This process's resident set now (bytes; Linux /proc), None where unavailable."""
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None


def cuda() -> dict[str, Any]:
    """A1111's cuda block: system, active, allocated, reserved, inactive, events (oom, retries)."""
    if not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(name: str) -> dict[str, int]:
        return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": pair("active_bytes"),
        "allocated": pair("allocated_bytes"),
        "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }


@dataclass
class PeakMemory:
    """The job's peak: device memory allocated (CUDA) and the process's resident set (the host)."""

    device: torch.device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def report(self) -> dict[str, int]:
        # ru_maxrss is in KiB on Linux: the process's high-water mark (the host side of every job so far)
        peak = {"ram_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        if self.device.type == "cuda" and torch.cuda.is_available():
            peak["cuda_peak_allocated"] = int(torch.cuda.max_memory_allocated(self.device))
            peak["cuda_peak_reserved"] = int(torch.cuda.max_memory_reserved(self.device))
        return peak
