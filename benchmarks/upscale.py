"""Upscaler tiling vs one plain spandrel call, and the cost of hires fix vs its two passes (issue 16).

1. A RealESRGAN x4plus architecture (spandrel's ESRGAN, 64 filters, 23 blocks: the full-size model) with random
   weights on a --size x --size image: our tiled run (tiles --tile, overlap --overlap) and one plain spandrel
   call on the whole image, each in its own process so that each peak RSS is its own (plus CUDA peak memory
   on a GPU). Goal: tiled time <= 1.1x plain, peak memory bounded by the tile size.
2. Hires fix at 2x with a latent upscaler: the job's time vs a first-pass-only job plus a job at the hires size
   with the hires steps, with the VAE calls counted (a latent upscaler: one decode, no encode) and the model
   loaded once. --model sd1 builds an SD1-sized U-Net/VAE/CLIP with random weights (needs ~4 GB of RAM and a
   fast device); --model tiny uses the tests' tiny SD1 (a CPU smoke run).

Usage: python benchmarks/upscale.py [--size 512] [--tile 192] [--overlap 8] [--blocks 23] [--device cpu|cuda]
                                    [--model tiny|sd1] [--hires-size 1024] [--steps 10] [--repeat 3] [--skip-upscaler]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _upscale_child(mode: str, args: argparse.Namespace, queue) -> None:
    """One measurement in a fresh process: build the model, run it once (warm-up on a small image), time it."""
    import torch
    from spandrel import ModelLoader
    from spandrel.architectures.ESRGAN import ESRGAN

    from sdwebui.engine.upscaling import TileSettings, tiled_apply

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=args.blocks, scale=4)
    model = ModelLoader().load_from_state_dict(net.state_dict()).to(torch.device(args.device)).eval()
    image = torch.rand(1, 3, args.size, args.size)
    with torch.inference_mode():
        model(torch.rand(1, 3, 16, 16, device=args.device))  # kernels / allocator warm-up
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base_rss = _rss_mb()
        start = time.perf_counter()
        if mode == "plain":
            out = model(image.to(args.device)).cpu()
        else:
            out = tiled_apply(model, image, TileSettings(args.tile, args.overlap))
        if args.device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    queue.put((mode, elapsed, base_rss, _rss_mb(), cuda_peak, tuple(out.shape)))


def upscaler_benchmark(args: argparse.Namespace) -> None:
    context = multiprocessing.get_context("spawn")
    results = {}
    for mode in ("plain", "tiled"):
        queue = context.Queue()
        child = context.Process(target=_upscale_child, args=(mode, args, queue))
        child.start()
        results[mode] = queue.get()
        child.join()
    print(f"RealESRGAN x4 ({args.blocks} blocks, random weights), {args.size}x{args.size} on {args.device}:")
    for mode, (_m, elapsed, base, peak, cuda_peak, shape) in results.items():
        extra = f", CUDA peak {cuda_peak:.0f} MiB" if cuda_peak is not None else ""
        label = "plain spandrel call" if mode == "plain" else f"tiled {args.tile}/overlap {args.overlap}"
        print(
            f"  {label:28s} {elapsed:8.2f} s, peak RSS {peak:7.0f} MiB (+{peak - base:.0f} MiB){extra} -> {shape}"
        )
    ratio = results["tiled"][1] / results["plain"][1]
    print(f"  tiled / plain time: {ratio:.2f}x (goal <= 1.1x)")


def _sd1_model(kind: str):
    import torch

    from sdwebui.models.components import build_components, family_config
    from sdwebui.models.model import ModelFamily
    from tests import tiny_models

    if kind == "tiny":
        return tiny_models.tiny_loaded_model("sd1")
    model = tiny_models.tiny_loaded_model("sd1")  # its tokenizer, info and scheduler; the modules: SD1-sized
    torch.manual_seed(0)
    components = build_components(family_config(ModelFamily.SD1), device="cpu")
    model.unet, model.vae, model.text_encoders = components.unet, components.vae, components.text_encoders
    model.native_resolution = 512
    return model


def hires_benchmark(args: argparse.Namespace) -> None:
    import torch

    from sdwebui.engine.context import JobContext
    from sdwebui.engine.generate import generate
    from sdwebui.engine.hires import HiresFix
    from sdwebui.engine.requests import Txt2ImgRequest
    from sdwebui.engine.settings import EngineSettings

    model = _sd1_model(args.model)
    device = torch.device(args.device)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    for module in (model.unet, model.vae, *model.text_encoders):
        module.to(device, dtype).eval().requires_grad_(False)
    model.device, model.dtype, model.vae_dtype = device, dtype, dtype
    calls = {"decode": 0, "encode": 0}
    model.vae.decoder.register_forward_pre_hook(lambda *_: calls.__setitem__("decode", calls["decode"] + 1))
    model.vae.encoder.register_forward_pre_hook(lambda *_: calls.__setitem__("encode", calls["encode"] + 1))
    settings = EngineSettings(save_images=False)
    size, steps = args.hires_size // 2, args.steps
    base = dict(prompt="a cat", seed=1, steps=steps, sampler_name="Euler", width=size, height=size)

    def timed(request: Txt2ImgRequest) -> float:
        """The best of --repeat runs (a shared machine's noise only ever adds time)."""
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            generate(model, request, JobContext(), settings)
            if args.device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    timed(Txt2ImgRequest(**{**base, "steps": 1}))  # warm-up
    first = timed(Txt2ImgRequest(**base))
    second = timed(Txt2ImgRequest(**{**base, "width": size * 2, "height": size * 2}))
    hires = HiresFix(hr_scale=2.0, hr_upscaler="Latent", denoising_strength=0.5, hr_second_pass_steps=steps)
    calls.update(decode=0, encode=0)
    both = timed(Txt2ImgRequest(**base, hires=hires))
    calls = {name: count // args.repeat for name, count in calls.items()}
    print(f"Hires fix 2x ({args.model} SD1, {size} -> {size * 2}, {steps} + {steps} steps, {args.device}):")
    print(f"  first pass alone {first:.2f} s + a {size * 2} px job {second:.2f} s = {first + second:.2f} s")
    print(f"  hires job {both:.2f} s = {both / (first + second):.2f}x the two passes; "
          f"VAE decodes {calls['decode']}, encodes {calls['encode']} (latent upscaler: 1 and 0)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=192)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=23, help="RRDB blocks (23: RealESRGAN x4plus)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--model", choices=("tiny", "sd1"), default="sd1")
    parser.add_argument("--hires-size", type=int, default=1024, help="the hires size (first pass: half)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="hires timings: the best of this many runs")
    parser.add_argument("--skip-upscaler", action="store_true")
    parser.add_argument("--skip-hires", action="store_true")
    args = parser.parse_args()
    if not args.skip_upscaler:
        upscaler_benchmark(args)
    if not args.skip_hires:
        hires_benchmark(args)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
