"""Checkpoint load time: the project's loader vs safetensors reads of the same full-size SD 1.5 fp16 file.

Writes a full-size SD 1.5-layout fp16 .safetensors (random data, shapes from the test manifest; ~2 GB), or
reuses ``--file``, then times, interleaved, median of ``--repeats`` (3), after one warm-up of each:

  lazy read        ``safetensors.torch.load_file``: the issue's baseline. It mmaps the file and makes views;
                   no weight byte is read until something touches it.
  read + copy      load_file, then a copy of every tensor: the cost of actually reading 2 GB of weights.
  read + fp32      load_file, then ``t.to(torch.float32)`` for every tensor: reads 2 GB, writes 4 GB.
  project fp16     ``load_checkpoint`` keeping the file's dtype for every component (what CUDA fp16 users get,
                   before the copy to the GPU). Weights are assigned zero-copy: still lazy, like load_file.
  project fp32     ``load_checkpoint`` with the CPU policy (everything fp32).

Ratios printed: project fp16 / lazy read (the issue's goal, <= 2x), and project fp32 / read + fp32 (the fair
one for the CPU policy).

Why project fp32 / lazy read cannot be near 2x: CPU inference runs in fp32, so every fp16 weight must be
converted, touching all 2 GB and writing 4 GB; the lazy read touches nothing. That conversion is the whole
cost of "read + fp32", which is therefore the fair baseline for the fp32 policy.

Why project fp16 / lazy read does not reach 2x either: what is left over the lazy read is a fixed cost,
independent of file size: building the ~1,100 ``nn.Module`` objects of the UNet, VAE and CLIP text encoder
(on the meta device: no allocation, no random numbers; ~0.1 s of pure Python), renaming the 1,131 LDM keys to
diffusers names, checking every key and shape, and assigning the tensors (~0.05 s). The lazy read does none
of that and takes a few hundredths of a second, so 2x of it leaves no room for building a model at all. The
weights themselves cost nothing extra: they are assigned zero-copy, exactly as lazy as in load_file.
Measured on a shared 2-core machine (load average 5-6), that fixed cost was 0.15-0.25 s. Python's cyclic
GC can add a full collection (0.1-0.5 s there) to any load; ``timed`` collects before each run.
The A1111 model hash (sha256 of the file) is not part of ``load_checkpoint``: the ModelManager computes it once
per file, in a thread while the first load runs, and caches it by path + mtime + size; its one-off cost is
printed separately.

Usage: .venv/bin/python benchmarks/load_time.py [--file PATH] [--repeats 3] [--small]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdwebui.models.discovery import checkpoint_info  # noqa: E402
from sdwebui.models.hashing import sha256_file  # noqa: E402
from sdwebui.models.loader import DevicePolicy, load_checkpoint  # noqa: E402

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

    write_single_file(tiny_loaded_model("sd1"), path, dtype=torch.float16, sidecar=True)


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def _read_copy(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in safetensors.torch.load_file(str(path)).items()}


def _read_fp32(path: Path) -> dict[str, torch.Tensor]:
    return {
        k: v.to(torch.float32) if v.is_floating_point() else v
        for k, v in safetensors.torch.load_file(str(path)).items()
    }


def _load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


def run(path: Path, repeats: int) -> None:
    info = checkpoint_info(path)
    half = DevicePolicy(dtype=torch.float16, vae_dtype=torch.float16)
    cases: dict[str, Callable[[], object]] = {
        "lazy read (safetensors load_file)": lambda: safetensors.torch.load_file(str(path)),
        "read + copy (load_file, clone all)": lambda: _read_copy(path),
        "read + fp32 (load_file, .to(fp32) all)": lambda: _read_fp32(path),
        "project fp16 (file dtype, all components)": lambda: load_checkpoint(info, half),
        "project fp32 (CPU policy)": lambda: load_checkpoint(info, DevicePolicy()),
    }
    print(f"file: {path} ({path.stat().st_size / 2**30:.2f} GiB, fp16)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {_load_average()}")
    for fn in cases.values():  # warm the page cache and one-off imports/caches (tokenizers)
        timed(fn)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nmedian of {repeats}, interleaved (all runs, s):")
    for name, value in median.items():
        print(f"  {name:<44} {value:8.3f}   [{', '.join(f'{t:.3f}' for t in times[name])}]")
    names = list(cases)
    lazy, copy, fp32, project_half, project_full = (median[n] for n in names)
    print("\nratios:")
    print(f"  project fp16 / lazy read      {project_half / lazy:7.2f}x   (issue goal: <= 2x)")
    print(f"  project fp16 / read + copy    {project_half / copy:7.2f}x")
    print(f"  project fp32 / read + fp32    {project_full / fp32:7.2f}x   (fair baseline for the CPU policy)")
    print(f"  project fp32 / lazy read      {project_full / lazy:7.2f}x   (fp32 must convert every weight)")
    print(f"  overhead over baseline: fp16 {project_half - lazy:+.3f} s, fp32 {project_full - fp32:+.3f} s")
    start = time.perf_counter()
    sha256_file(path)
    print(
        f"\nmodel hash (sha256, once per file, cached afterwards; not in the times above): "
        f"{time.perf_counter() - start:.3f} s"
    )
    print(f"load average at the end: {_load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="reuse this SD 1.5 fp16 file (written there if missing)")
    parser.add_argument("--small", action="store_true", help="tiny model instead of the ~2 GB SD 1.5 file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    write = write_small if args.small else write_full_size
    if args.file:
        if not args.file.is_file():
            write(args.file)
        run(args.file, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sd15-random-fp16.safetensors"
        write(path)
        run(path, args.repeats)


if __name__ == "__main__":
    main()
