"""Checkpoint load time: the project's loader vs a plain safetensors.torch.load_file of the same file.

Writes a full-size SD 1.5-layout fp16 .safetensors (random data, shapes from the test manifest; ~2 GB) in a
temp dir, then times both, interleaved, median of 3. ``--small`` uses a tiny model for a quick check.
Usage: .venv/bin/python benchmarks/load_time.py [--small] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modules.sd_models.discovery import checkpoint_info  # noqa: E402
from modules.sd_models.loader import DevicePolicy, load_checkpoint  # noqa: E402

MANIFEST = ROOT / "tests" / "fixtures" / "checkpoint-manifests" / "sd15.json"


def write_full_size(path: Path) -> None:
    shapes = json.loads(MANIFEST.read_text())
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1]).unsqueeze(0)
        else:
            state[key] = (torch.randn(shape, generator=generator) * 0.02).to(torch.float16)
    safetensors.torch.save_file(state, str(path))


def write_small(path: Path) -> None:
    from tests.tiny_models import tiny_loaded_model, write_single_file

    write_single_file(tiny_loaded_model("sd1"), path, dtype=torch.float16)


def timed(fn) -> float:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny model instead of the ~2 GB SD 1.5 file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sd15-random-fp16.safetensors"
        (write_small if args.small else write_full_size)(path)
        info = checkpoint_info(path)
        print(f"file: {path.name}, {path.stat().st_size / 2**30:.2f} GiB")
        policies = {
            "project (CPU fp32)": DevicePolicy(),
            "project (keep fp16)": DevicePolicy(dtype=torch.float16),
        }
        raw_times: list[float] = []
        project_times: dict[str, list[float]] = {name: [] for name in policies}
        timed(lambda: safetensors.torch.load_file(str(path)))  # warm the page cache once
        for _ in range(args.repeats):
            raw_times.append(timed(lambda: safetensors.torch.load_file(str(path))))
            for name, policy in policies.items():
                project_times[name].append(timed(lambda policy=policy: load_checkpoint(info, policy)))
        raw = statistics.median(raw_times)
        print(f"safetensors.torch.load_file median: {raw:.3f} s")
        for name, times in project_times.items():
            median = statistics.median(times)
            print(f"{name} median: {median:.3f} s  ratio: {median / raw:.2f}x")


if __name__ == "__main__":
    main()
