"""Flux- and SD3-shaped random transformers: our engine's loop vs diffusers' FluxPipeline /
StableDiffusion3Pipeline on the same weights, and GGUF Q8_0 / Q4_K against bf16 (time and memory).

The transformers are scaled down (width 768, a few blocks; 256x256 images; tiny text encoders and VAE)
so that a CPU run takes minutes. Each measurement runs in its own process, so its peak memory (VmHWM on
the CPU, peak CUDA allocation on a GPU) is its own. s/it is (time of S steps - time of 1 step) / (S - 1),
each the fastest of REPEATS runs: the fixed costs (text encoders, VAE) cancel out; the loop is what differs.
Usage: python benchmarks/dit.py [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdwebui.models.model import CheckpointInfo, ModelFamily  # noqa: E402
from tests import dit_fixtures as fx  # noqa: E402

SCALED_FLUX = dict(
    fx.FLUX,
    attention_head_dim=128,
    num_attention_heads=6,
    num_layers=2,
    num_single_layers=4,
    axes_dims_rope=[16, 56, 56],
)
SCALED_SD3 = dict(
    fx.SD3,
    attention_head_dim=64,
    num_attention_heads=12,
    num_layers=4,
    caption_projection_dim=768,
    sample_size=32,
    pos_embed_max_size=64,
    dual_attention_layers=[],
)
SIZE = 256
REPEATS = 2  # the fastest run counts: a shared machine's noise only ever slows a run down
RUNS = [  # (name, family, engine, weights, dtype)
    ("flux ours", "flux-dev", "ours", "safetensors", "float32"),
    ("flux diffusers", "flux-dev", "diffusers", "safetensors", "float32"),
    ("sd3 ours", "sd3", "ours", "safetensors", "float32"),
    ("sd3 diffusers", "sd3", "diffusers", "safetensors", "float32"),
    ("flux bf16", "flux-dev", "ours", "bf16", "bfloat16"),
    ("flux GGUF Q8_0", "flux-dev", "ours", "Q8_0", "bfloat16"),
    ("flux GGUF Q4_K", "flux-dev", "ours", "Q4_K", "bfloat16"),
]


def scaled_model(family: ModelFamily, folder: Path):
    transformer = SCALED_SD3 if family == ModelFamily.SD3 else SCALED_FLUX
    return fx.tiny_dit_model(family, folder, transformer=transformer, size=SIZE)


def write_files(folder: Path) -> None:
    for family in (ModelFamily.FLUX_DEV, ModelFamily.SD3):
        model = scaled_model(family, folder / family.value)
        parts = fx.write_parts(model, folder / family.value / "text_encoder", folder / family.value / "VAE")
        (folder / f"{family.value}-parts.json").write_text(json.dumps([str(p) for p in parts.values()]))
        if family == ModelFamily.SD3:
            fx.write_sd3_single_file(model, folder / "sd3.safetensors", with_encoders=False)
            continue
        fx.write_flux_transformer_only(model, folder / "flux-dev.safetensors")
        fx.write_flux_transformer_only(model, folder / "flux-dev-bf16.safetensors", torch.bfloat16)
        for quant in ("Q8_0", "Q4_K"):
            fx.write_flux_gguf(model, folder / f"flux-dev-{quant}.gguf", quant)


def _file(folder: Path, family: str, weights: str) -> Path:
    if weights == "safetensors":
        return folder / f"{family}.safetensors"
    if weights == "bf16":
        return folder / f"{family}-bf16.safetensors"
    return folder / f"{family}-{weights}.gguf"


def measure(folder: Path, name: str, family: str, engine: str, weights: str, dtype: str, steps: int) -> dict:
    from sdwebui.models.dit.checkpoints import load_checkpoint
    from sdwebui.models.loader import DevicePolicy

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    policy = DevicePolicy(device, getattr(torch, dtype), torch.float32)
    path = _file(folder, family, weights)
    parts = [Path(p) for p in json.loads((folder / f"{family}-parts.json").read_text())]
    model = load_checkpoint(CheckpointInfo(path, path.stem, path.name, str(path)), policy, parts)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.unet.state_dict().values())
    run = _ours if engine == "ours" else _diffusers
    run(model, 1)  # warm-up
    one = min(_timed(run, model, 1) for _ in range(REPEATS))  # the fixed cost (encoders, VAE, set-up)
    many = min(_timed(run, model, steps) for _ in range(REPEATS))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss()
    return {
        "name": name,
        "s_per_it": (many - one) / (steps - 1),
        "weights_mb": weight_bytes / 2**20,
        "peak_mb": peak / 2**20,
    }


def _timed(run, model, steps: int) -> float:
    start = time.perf_counter()
    run(model, steps)
    return time.perf_counter() - start


def _peak_rss() -> int:
    """This process's peak resident memory since its exec (VmHWM; ru_maxrss would count the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _ours(model, steps: int) -> None:
    from sdwebui.engine.context import JobContext
    from sdwebui.engine.generate import generate
    from sdwebui.engine.requests import Txt2ImgRequest
    from sdwebui.engine.settings import EngineSettings

    cfg = 4.5 if model.family == ModelFamily.SD3 else 1.0
    request = Txt2ImgRequest(
        prompt="a photo of a cat",
        negative_prompt="",
        seed=1,
        steps=steps,
        width=SIZE,
        height=SIZE,
        sampler_name="Euler",
        scheduler="Simple",
        cfg_scale=cfg,
    )
    generate(model, request, JobContext(), EngineSettings(save_images=False))


def _diffusers(model, steps: int) -> None:
    import diffusers

    e, t = model.text_encoders, model.tokenizers
    if model.family == ModelFamily.SD3:
        pipe = diffusers.StableDiffusion3Pipeline(
            model.unet,
            diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
            model.vae,
            e[0],
            t[0],
            e[1],
            t[1],
            e[2],
            t[2],
        )
        pipe(
            "a photo of a cat",
            height=SIZE,
            width=SIZE,
            num_inference_steps=steps,
            guidance_scale=4.5,
            output_type="np",
        )
        return
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    pipe = diffusers.FluxPipeline(scheduler, model.vae, e[0], t[0], e[1], t[1], model.unet)
    pipe(
        "a photo of a cat",
        height=SIZE,
        width=SIZE,
        num_inference_steps=steps,
        guidance_scale=3.5,
        output_type="np",
        max_sequence_length=512,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, in a child process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run = next(r for r in RUNS if r[0] == args.one)
        print(json.dumps(measure(Path(args.folder), *run, args.steps)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_files(Path(tmp))
        results = []
        for run in RUNS:
            command = [sys.executable, __file__, "--one", run[0], "--folder", tmp, "--steps", str(args.steps)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    _report(results)


def _report(results: list[dict]) -> None:
    by_name = {r["name"]: r for r in results}
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"DiT benchmark on {device}, {SIZE}x{SIZE}, scaled-down transformers (Flux 768 wide, SD3 768 wide)")
    print(f"{'run':18} {'s/it':>8} {'weights MB':>11} {'peak MB':>9}")
    for r in results:
        print(f"{r['name']:18} {r['s_per_it']:8.3f} {r['weights_mb']:11.1f} {r['peak_mb']:9.0f}")
    for family in ("flux", "sd3"):
        ours, theirs = by_name[f"{family} ours"], by_name[f"{family} diffusers"]
        print(f"{family}: ours / diffusers time = {ours['s_per_it'] / theirs['s_per_it']:.3f}x")
    bf16 = by_name["flux bf16"]
    for quant in ("Q8_0", "Q4_K"):
        q = by_name[f"flux GGUF {quant}"]
        print(
            f"GGUF {quant} / bf16: weights {q['weights_mb'] / bf16['weights_mb']:.3f}x, "
            f"time {q['s_per_it'] / bf16['s_per_it']:.3f}x"
        )


if __name__ == "__main__":
    main()
