"""ControlNet overhead: the engine with 0 / 1 / 2 units vs diffusers' StableDiffusionControlNetPipeline.

The same random SD1-shaped U-Net (benchmarks/engine_overhead.py's model) and ControlNets made from it
(`ControlNetModel.from_unet`, zero convolutions randomised), same sampler, steps, seed, prompt, control image
and size, interleaved runs, medians. The engine loads the ControlNets from real diffusers folders through
models/ControlNet's library and cache (loaded once: the load count is printed).
Goals: engine overhead (1 unit / plain) <= diffusers' overhead; 2 units cost <= 2x one unit's extra.
Default: a small model at 256x256 on the CPU; `--full-size` an SD 1.5-sized one at 512x512 (`--device cuda`).
Usage: .venv/bin/python benchmarks/controlnet.py [--steps 6] [--runs 3] [--full-size] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine_overhead import bench_model  # noqa: E402
from sdwebui.engine import samplers  # noqa: E402
from sdwebui.engine.context import JobContext  # noqa: E402
from sdwebui.engine.controlnet.units import ControlImage, ControlNetUnit  # noqa: E402
from sdwebui.engine.generate import generate  # noqa: E402
from sdwebui.engine.requests import Txt2ImgRequest  # noqa: E402
from sdwebui.engine.settings import EngineSettings  # noqa: E402
from sdwebui.models.controlnet import ControlNetLibrary, ControlNets  # noqa: E402

SAMPLER = "Euler"


def make_controlnet(unet, seed: int) -> ControlNetModel:
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for conv in (
            *net.controlnet_down_blocks,
            net.controlnet_mid_block,
            net.controlnet_cond_embedding.conv_out,
        ):
            conv.weight.normal_(0.0, 0.05)
    return net.eval().requires_grad_(False)


def control_image(size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).ellipse(
        [size // 4, size // 4, 3 * size // 4, 3 * size // 4], outline="white", width=4
    )
    return image


def timed(fn, times: list[float]) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--full-size", action="store_true", help="an SD 1.5-sized model at 512x512")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp16 on cuda)")
    parser.add_argument("--size", type=int, default=0, help="image size (default: the model's native size)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = bench_model(args.full_size, device, dtype)
    size = args.size or model.native_resolution
    hint = control_image(size)
    nets = [make_controlnet(model.unet, 10 + i) for i in range(2)]

    with tempfile.TemporaryDirectory() as tmp:
        for i, net in enumerate(nets):
            net.save_pretrained(str(Path(tmp) / f"bench_cn{i}"))
        store = ControlNets(ControlNetLibrary([Path(tmp)]))
        settings = EngineSettings(save_images=False, controlnets=store)
        units = [
            ControlNetUnit(enabled=True, module="none", model=f"bench_cn{i}", images=(ControlImage(hint),))
            for i in range(2)
        ]

        def engine(count: int):
            request = Txt2ImgRequest(prompt="a photo of a cat", negative_prompt="blurry", seed=1, steps=args.steps,
                                     sampler_name=SAMPLER, width=size, height=size, controlnet_units=units[:count])  # fmt: skip
            return lambda: generate(model, request, JobContext(), settings)

        gpu_nets = [torch.nn.Module.to(n, device=device, dtype=dtype) for n in nets]
        common = dict(vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0],
                      unet=model.unet, scheduler=samplers.create_scheduler(SAMPLER, "Automatic", model.scheduler_config),
                      safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
        plain_pipe = StableDiffusionPipeline(**common)
        cn_pipes = [StableDiffusionControlNetPipeline(controlnet=gpu_nets[0], **common),
                    StableDiffusionControlNetPipeline(controlnet=gpu_nets, **common)]  # fmt: skip
        for pipe in (plain_pipe, *cn_pipes):
            pipe.set_progress_bar_config(disable=True)

        def diffusers(count: int):
            def run():
                kwargs = dict(num_inference_steps=args.steps, guidance_scale=7.0, height=size, width=size,
                              negative_prompt="blurry", generator=torch.Generator().manual_seed(1))  # fmt: skip
                if count == 0:
                    return plain_pipe("a photo of a cat", **kwargs)
                image = hint if count == 1 else [hint, hint]
                return cn_pipes[count - 1]("a photo of a cat", image=image, **kwargs)

            return run

        runs = {(kind, n): [] for kind in ("engine", "diffusers") for n in range(3)}
        for n in range(3):  # warm-up (and the engine's one load of each ControlNet)
            engine(n)(), diffusers(n)()
        for _ in range(args.runs):
            for n in range(3):
                timed(engine(n), runs[("engine", n)])
                timed(diffusers(n), runs[("diffusers", n)])
        med = {key: statistics.median(times) for key, times in runs.items()}
        report(args, device, dtype, size, med, store)


def report(args, device, dtype, size, med, store: ControlNets) -> None:
    print(f"size={size}x{size} steps={args.steps} runs={args.runs} device={device} "
          f"dtype={str(dtype).removeprefix('torch.')} sampler={SAMPLER}")  # fmt: skip
    for kind in ("engine", "diffusers"):
        print(
            f"{kind:9s} plain {med[(kind, 0)]:.3f} s   1 unit {med[(kind, 1)]:.3f} s   2 units {med[(kind, 2)]:.3f} s"
        )
    over = {k: med[(k, 1)] / med[(k, 0)] for k in ("engine", "diffusers")}
    print(f"overhead of 1 unit: engine x{over['engine']:.3f}, diffusers x{over['diffusers']:.3f} "
          f"(goal: engine <= diffusers) -> ratio {over['engine'] / over['diffusers']:.3f}")  # fmt: skip
    extra1 = med[("engine", 1)] - med[("engine", 0)]
    extra2 = med[("engine", 2)] - med[("engine", 0)]
    print(
        f"engine: 2 units' extra / 1 unit's extra = {extra2 / extra1 if extra1 > 0 else float('nan'):.3f} (goal <= 2)"
    )
    loaded = store.cache.loaded()
    mb = sum(m.nbytes() for m in loaded) / 2**20
    print(
        f"ControlNet files loaded {store.cache.loads} times for all runs; {len(loaded)} cached, {mb:.1f} MiB"
    )


if __name__ == "__main__":
    main()
