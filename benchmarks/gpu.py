"""it/s and peak memory: plain diffusers (fp16 + SDPA) against our engine's memory modes, same run.

Full size (a GPU): SD1.5 512x512 and SDXL 1024x1024 with random weights of the real shapes (no download),
20 steps, CFG 7, batch 1 and 4. `--small`: the tiny test models at 64x64 on the CPU (2 steps), so any machine
exercises every path; there the numbers measure overhead, not a GPU, and offload moves nothing (CPU -> CPU).
"ours + compile" is compile + channels-last + cuDNN benchmark (skipped with --small). Usage: python benchmarks/gpu.py [--small]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdwebui.engine.context import JobContext  # noqa: E402
from sdwebui.engine.generate import generate  # noqa: E402
from sdwebui.engine.memory.settings import MemorySettings  # noqa: E402
from sdwebui.engine.requests import Txt2ImgRequest  # noqa: E402
from sdwebui.engine.settings import EngineSettings  # noqa: E402
from sdwebui.engine.speed.settings import SpeedSettings  # noqa: E402
from sdwebui.models.components import build_components, family_config  # noqa: E402
from sdwebui.models.model import CheckpointInfo, LoadedModel, ModelFamily  # noqa: E402
from tests import tiny_models  # noqa: E402

REPEATS = 3
FAST = SpeedSettings(compile=True, channels_last=True, cudnn_benchmark=True)
OURS = (
    ("ours default", "auto", SpeedSettings()),
    ("ours + compile", "auto", FAST),
    ("ours medvram", "medvram", SpeedSettings()),
    ("ours lowvram", "lowvram", SpeedSettings()),
    ("ours fp8", "auto", SpeedSettings(fp8_storage="Enable")),
)


@dataclass(frozen=True)
class Case:
    family: ModelFamily
    size: int
    steps: int
    batch: int


@dataclass(frozen=True)
class Figure:
    label: str
    its: float
    peak_mb: float | None


def full_model(family: ModelFamily, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    config = family_config(family)
    torch.manual_seed(0)
    parts = build_components(config, "cpu")
    info = CheckpointInfo(
        path=Path(family.value), name=family.value, title=family.value, filename=family.value
    )
    return LoadedModel(
        info=info,
        family=family,
        unet=parts.unet.to(device, dtype),
        vae=parts.vae.to(device, dtype),
        text_encoders=[encoder.to(device, dtype) for encoder in parts.text_encoders],
        tokenizers=tiny_models.tokenizers_for(family),
        scheduler_config=dict(config["scheduler"]),
        device=device,
        dtype=dtype,
        vae_dtype=dtype,
        native_resolution=1024 if family == ModelFamily.SDXL else 512,
    )


def diffusers_run(model: LoadedModel, case: Case) -> None:
    import diffusers

    scheduler = diffusers.EulerDiscreteScheduler.from_config(model.scheduler_config)
    if model.is_sdxl:
        pipe = diffusers.StableDiffusionXLPipeline(
            model.vae, *model.text_encoders, *model.tokenizers, model.unet, scheduler
        )
    else:
        pipe = diffusers.StableDiffusionPipeline(
            vae=model.vae,
            text_encoder=model.text_encoders[0],
            tokenizer=model.tokenizers[0],
            unet=model.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    pipe(
        ["a cat"] * case.batch,
        height=case.size,
        width=case.size,
        num_inference_steps=case.steps,
        guidance_scale=7.0,
        generator=torch.Generator("cpu").manual_seed(1),
    )


def ours_run(model: LoadedModel, case: Case, mode: str, speed: SpeedSettings) -> None:
    request = Txt2ImgRequest(
        prompt="a cat",
        negative_prompt="",
        seed=1,
        steps=case.steps,
        cfg_scale=7.0,
        width=case.size,
        height=case.size,
        batch_size=case.batch,
        sampler_name="Euler",
    )
    generate(
        model, request, JobContext(), EngineSettings(save_images=False, memory=MemorySettings(mode=mode))
    )


def measure(label: str, model: LoadedModel, case: Case, run) -> Figure:
    run()  # warm-up (kernels, allocator, group-offload hooks)
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(REPEATS):  # the median: other work on a shared machine makes single runs noisy
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    elapsed = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return Figure(label, case.steps / elapsed, peak)  # it/s of the whole job (encode, steps, decode)


def bench(model: LoadedModel, case: Case, small: bool) -> list[Figure]:
    figures = [measure("plain diffusers", model, case, lambda: diffusers_run(model, case))]
    for label, mode, speed in OURS:
        if small and speed.compile:  # inductor on a CPU compiles for minutes: not a CI-sized run
            continue
        run = lambda mode=mode, speed=speed: ours_run(model, case, mode, speed)  # noqa: E731
        figures.append(measure(label, model, case, run))
    ours_run(model, case, "gpu", SpeedSettings())  # everything back on the device for the next case
    return figures


def report(case: Case, figures: list[Figure]) -> None:
    base = figures[0].its
    print(f"\n{case.family.value} {case.size}x{case.size}, {case.steps} steps, CFG 7, batch {case.batch}")
    print(f"  {'':18} {'it/s':>9} {'x diffusers':>12} {'peak MB':>9}")
    for f in figures:
        peak = f"{f.peak_mb:9.0f}" if f.peak_mb is not None else "      n/a"
        print(f"  {f.label:18} {f.its:9.2f} {f.its / base:11.2f}x {peak}")
    if len(figures) < len(OURS) + 1:
        print(f"  {'ours + compile':18} skipped with --small (inductor on a CPU compiles for minutes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="tiny models on the CPU (CI)")
    small = parser.parse_args().small
    cuda = torch.cuda.is_available() and not small
    device = torch.device("cuda" if cuda else "cpu")
    print(f"device: {torch.cuda.get_device_name() if cuda else 'CPU'}; torch {torch.__version__}")
    if small:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        cases = [Case(f, 64, 2, b) for f in (ModelFamily.SD1, ModelFamily.SDXL) for b in (1, 4)]
    else:
        cases = [
            Case(f, s, 20, b) for f, s in ((ModelFamily.SD1, 512), (ModelFamily.SDXL, 1024)) for b in (1, 4)
        ]
    models: dict[ModelFamily, LoadedModel] = {}
    for case in cases:
        if case.family not in models:
            models.clear()
            if small:
                models[case.family] = tiny_models.tiny_loaded_model(case.family)
            else:
                models[case.family] = full_model(case.family, device, torch.float16)
        report(case, bench(models[case.family], case, small))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nhost peak RSS of the whole run: {rss:.0f} MB")


if __name__ == "__main__":
    main()
