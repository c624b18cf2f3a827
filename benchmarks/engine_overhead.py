"""Engine overhead vs a plain diffusers StableDiffusionPipeline on the same weights.

Both run the same random SD1-shaped model, sampler, steps, seed, prompt and size; runs are interleaved,
median of 5. Goal: engine / diffusers <= 1.05. By default a small model (U-Net channels 64/128,
256x256) on the CPU; `--full-size` builds a real SD 1.5-sized model (860M-parameter U-Net, 512x512)
and `--device cuda` runs both on a GPU in fp16.
Usage: .venv/bin/python benchmarks/engine_overhead.py [--steps 10] [--runs 5] [--sampler "Euler a"]
       [--full-size] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdwebui.engine import samplers  # noqa: E402
from sdwebui.engine.context import JobContext  # noqa: E402
from sdwebui.engine.generate import generate  # noqa: E402
from sdwebui.engine.requests import Txt2ImgRequest  # noqa: E402
from sdwebui.engine.settings import EngineSettings  # noqa: E402
from sdwebui.models.components import build_components, family_config  # noqa: E402
from sdwebui.models.model import CheckpointInfo, LoadedModel, ModelFamily  # noqa: E402
from sdwebui.models.tokenizer import build_clip_tokenizer  # noqa: E402

SMALL_SIZE = 256
FULL_SIZE = 512


def small_config() -> dict:
    return {
        "unet": {
            "block_out_channels": [64, 128],
            "layers_per_block": 1,
            "norm_num_groups": 16,
            "cross_attention_dim": 64,
            "attention_head_dim": 8,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "sample_size": SMALL_SIZE // 8,
            "in_channels": 4,
        },
        "vae": {
            "block_out_channels": [16, 32, 32, 32],
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "latent_channels": 4,
            "sample_size": SMALL_SIZE,
            "scaling_factor": 0.18215,
        },
        "text_encoder": {
            "architectures": ["CLIPTextModel"],
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
        },
    }


def bench_model(full_size: bool, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    config = family_config(ModelFamily.SD1) if full_size else small_config()
    torch.manual_seed(0)
    components = build_components(config, device=device)
    for module in (components.unet, components.vae, *components.text_encoders):
        module.eval().requires_grad_(False).to(dtype)
    info = CheckpointInfo(path=Path("bench"), name="bench", title="bench.safetensors", filename="bench")
    return LoadedModel(
        info=info,
        family=ModelFamily.SD1,
        unet=components.unet,
        vae=components.vae,
        text_encoders=components.text_encoders,
        tokenizers=[build_clip_tokenizer()],
        scheduler_config=dict(family_config(ModelFamily.SD1)["scheduler"]),
        device=device,
        dtype=dtype,
        vae_dtype=dtype,
        native_resolution=FULL_SIZE if full_size else SMALL_SIZE,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--full-size", action="store_true", help="a real SD 1.5-sized model at 512x512")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp16 on cuda)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch sees no CUDA device")
    dtype = torch.float16 if device.type == "cuda" else torch.float32

    model = bench_model(args.full_size, device, dtype)
    size = model.native_resolution
    request = Txt2ImgRequest(
        prompt="a photo of a cat",
        negative_prompt="blurry",
        seed=1,
        steps=args.steps,
        cfg_scale=7.0,
        sampler_name=args.sampler,
        width=size,
        height=size,
    )
    settings = EngineSettings(save_images=False)
    pipe = StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoders[0],
        tokenizer=model.tokenizers[0],
        unet=model.unet,
        scheduler=samplers.create_scheduler(args.sampler, "Automatic", model.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    def run_engine() -> None:
        generate(model, request, JobContext(), settings)

    def run_pipeline() -> None:
        pipe.scheduler = samplers.create_scheduler(args.sampler, "Automatic", model.scheduler_config)
        pipe(
            "a photo of a cat",
            negative_prompt="blurry",
            num_inference_steps=args.steps,
            guidance_scale=7.0,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(1),
        )

    run_engine(), run_pipeline()  # warm-up
    engine_times, pipeline_times = [], []
    for _ in range(args.runs):
        for fn, times in ((run_engine, engine_times), (run_pipeline, pipeline_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    engine, diffusers_time = statistics.median(engine_times), statistics.median(pipeline_times)
    print(
        f"sampler={args.sampler} steps={args.steps} size={size}x{size} runs={args.runs} device={device} "
        f"dtype={str(dtype).removeprefix('torch.')} threads={torch.get_num_threads()}"
    )
    print(f"engine   median {engine:.3f} s")
    print(f"diffusers median {diffusers_time:.3f} s")
    print(f"ratio engine/diffusers = {engine / diffusers_time:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
