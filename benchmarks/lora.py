"""LoRA apply / switch / remove: this app's lease patches vs diffusers' load_lora_weights + fuse_lora.

One SDXL-shaped random model (SDXL's U-Net blocks, depths and cross-attention width, CLIP-L and bigG
widths), one rank-32 kohya LoRA with real SDXL key names (``lora_unet_input_blocks_4_1_...`` SGM names on
every transformer block's attention/feed-forward/proj layers, ``lora_te1_``/``lora_te2_`` on both text
encoders' attention and MLP layers). Both sides patch the same module objects in the same run, ours first
(then undone bit-exactly), then diffusers'. Printed: time to first image with the LoRA (cold: file read,
deltas, patch, one image, undo), the apply alone (cold, timed on its own: a difference of two images' times
would carry their noise), the apply as a second job finds the deltas cached, time to switch the weight (1 -> 0.5: in place within a job, and as two jobs do
it, the first's undo then the second's apply), time to go back to no LoRA, the ratios,
and the RAM the LoRA budget holds (cached differences, the undo's copies) against its limit. Goal (issue 15): apply <= 0.5x diffusers, switching
weight <= 0.2x, RAM overhead <= the delta cache limit.

By default the U-Net channels are halved (160/320/640) and the text encoders have 4 layers each, so it
fits and runs on a small CPU machine; `--full-size` builds the real SDXL sizes (2.6B-parameter U-Net:
~10 GB in fp32, use `--device cuda`, which runs fp16). diffusers' side needs `peft`.
Usage: .venv/bin/python benchmarks/lora.py [--steps 4] [--size 256] [--full-size] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdwebui.engine import samplers  # noqa: E402
from sdwebui.engine.context import JobContext  # noqa: E402
from sdwebui.engine.extra_networks import LoraNetworksPatch  # noqa: E402
from sdwebui.engine.generate import generate  # noqa: E402
from sdwebui.engine.requests import Txt2ImgRequest  # noqa: E402
from sdwebui.engine.settings import EngineSettings  # noqa: E402
from sdwebui.models.components import build_components, family_config  # noqa: E402
from sdwebui.models.lease import ModelLease  # noqa: E402
from sdwebui.models.lora import DeltaCache, LoraPatch, NetworkWeight, build_index, resolve_module  # noqa: E402
from sdwebui.models.lora.library import LoraLibrary  # noqa: E402
from sdwebui.models.model import CheckpointInfo, LoadedModel, ModelFamily  # noqa: E402
from sdwebui.models.tokenizer import build_clip_tokenizer, build_openclip_tokenizer  # noqa: E402

RANK, ALPHA = 32, 16.0
UNET_LAYERS = (".to_q", ".to_k", ".to_v", ".to_out.0", ".ff.net.0.proj", ".ff.net.2", ".proj_in", ".proj_out")
TEXT_LAYERS = (".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")
PROBE = "unet.down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k"  # compared across both sides


def bench_config(full_size: bool, size: int, small: bool = False) -> dict:
    config = family_config(ModelFamily.SDXL)
    if small:  # 0.4x channels, 2-layer text encoders: for iterating on a loaded machine
        config["unet"]["block_out_channels"] = [128, 256, 512]
        config["unet"]["attention_head_dim"] = [4, 8, 16]
        config["text_encoder"]["num_hidden_layers"] = 2
        config["text_encoder_2"]["num_hidden_layers"] = 2
    elif not full_size:
        config["unet"]["block_out_channels"] = [160, 320, 640]
        config["unet"]["attention_head_dim"] = [5, 10, 20]  # heads as SDXL: 32-wide heads instead of 64
        config["text_encoder"]["num_hidden_layers"] = 4
        config["text_encoder_2"]["num_hidden_layers"] = 4
    config["unet"]["sample_size"] = size // 8
    return config


def bench_model(config: dict, device: torch.device, dtype: torch.dtype, size: int) -> LoadedModel:
    torch.manual_seed(0)
    components = build_components(config, device=device)
    for module in (components.unet, components.vae, *components.text_encoders):
        module.eval().requires_grad_(False).to(dtype)
    info = CheckpointInfo(path=Path("bench-sdxl"), name="bench-sdxl", title="bench-sdxl.safetensors",
                          filename="bench-sdxl")  # fmt: skip
    return LoadedModel(
        info=info, family=ModelFamily.SDXL, unet=components.unet, vae=components.vae,
        text_encoders=components.text_encoders, tokenizers=[build_clip_tokenizer(), build_openclip_tokenizer()],
        scheduler_config=dict(config["scheduler"]), device=device, dtype=dtype, vae_dtype=dtype,
        native_resolution=size,
    )  # fmt: skip


def write_kohya_lora(model: LoadedModel, path: Path) -> int:
    """A rank-32 kohya SDXL LoRA named as trainers write it (SGM U-Net names, te1/te2); its module count."""
    import safetensors.torch

    index = build_index(model)
    generator = torch.Generator().manual_seed(1)
    tensors: dict[str, torch.Tensor] = {}
    sgm = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
    for name, target in sorted(index.aliases.items()):
        unet = name.startswith(sgm) and ".attentions." in target and target.endswith(UNET_LAYERS)
        text = name.startswith(("lora_te1_text_model_encoder", "lora_te2_text_model_encoder"))
        if not (unet or (text and target.endswith(TEXT_LAYERS))) or f"{name}.alpha" in tensors:
            continue
        weight = index.modules[target].weight
        out_ch, in_ch = weight.shape[:2]
        kernel = [1] * (weight.dim() - 2)
        tensors[f"{name}.lora_down.weight"] = torch.randn(RANK, in_ch, *kernel, generator=generator) * 0.02
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_ch, RANK, *kernel, generator=generator) * 0.02
        tensors[f"{name}.alpha"] = torch.tensor(ALPHA)
    safetensors.torch.save_file(tensors, str(path), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    return len(tensors) // 3


CLOCK = [time.perf_counter]  # --clock cpu: process CPU time, for a shared machine where wall time is noise


def timed(fn: Callable[[], object]) -> float:
    start = CLOCK[0]()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return CLOCK[0]() - start


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def cold_apply(model: LoadedModel, lora_dir: Path) -> float:
    """The patch alone as a job's first use of the file does it, on its own library and cache (dropped
    after): read the file, compute (and cache) the deltas, copy and patch the weights. Then undone."""
    undo: list[Callable[[], None]] = []

    def apply() -> None:
        library, cache = LoraLibrary([lora_dir]), DeltaCache()
        network = library.network(library.find("bench"), model)
        undo.append(LoraPatch([NetworkWeight(network, 1.0, 1.0)], cache).apply(model))

    seconds = timed(apply)
    undo.pop()()
    return seconds


def run_ours(model: LoadedModel, lora_dir: Path, request: Txt2ImgRequest) -> dict[str, float]:
    settings = EngineSettings(save_images=False)
    library, cache = LoraLibrary([lora_dir]), DeltaCache()
    patch = LoraNetworksPatch(lambda name, m: library.network(library.find(name), m), cache)
    plain = timed(lambda: generate(model, request, JobContext(), settings))
    before = rss()
    cold = cold_apply(model, lora_dir)

    def first_image() -> None:
        tagged = dataclasses.replace(request, prompt=request.prompt + " <lora:bench:1>")
        with ModelLease(model, [patch]) as view:
            generate(view, tagged, JobContext(), settings)

    first = timed(first_image)  # cold: reads the file, computes and caches the deltas, patches, one image
    held = rss() - before
    # apply / switch / remove on their own, with the deltas cached as a second job finds them
    network = library.network(library.find("bench"), model)
    undo: list[Callable[[], None]] = []
    apply_cached = timed(
        lambda: undo.append(LoraPatch([NetworkWeight(network, 1.0, 1.0)], cache).apply(model))
    )
    copies = undo[-1].nbytes  # what the undo holds while the LoRA is applied (copies of the weights in RAM)
    probe = resolve_module(model, PROBE).weight.detach().float().clone()

    def switch(weight: float) -> None:  # as a job's later batch does: one step per weight, in place
        if not LoraPatch([NetworkWeight(network, weight, weight)], cache).reweight(undo[-1]):
            raise RuntimeError("the switch fell back to undo + apply")

    switch_time = timed(lambda: switch(0.5))
    switch(1.0)

    def across_jobs() -> None:  # one job ends (the lease undoes), the next applies the new weight
        undo.pop()()
        undo.append(LoraPatch([NetworkWeight(network, 0.5, 0.5)], cache).apply(model))

    across = timed(across_jobs)
    none_time = timed(lambda: undo.pop()())
    return dict(plain=plain, first=first, cold=cold, apply_cached=apply_cached, switch=switch_time, across=across,
                none=none_time, held=held, cache_bytes=cache.bytes, cache_limit=cache.limit_bytes,
                copies=copies, probe=probe)  # fmt: skip


def run_diffusers(model: LoadedModel, path: Path, request: Txt2ImgRequest) -> dict[str, float]:
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=model.vae, text_encoder=model.text_encoders[0], text_encoder_2=model.text_encoders[1],
        tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1], unet=model.unet,
        scheduler=samplers.create_scheduler(request.sampler_name, "Automatic", model.scheduler_config),
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)

    def image() -> None:
        pipe(request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=request.steps,
             guidance_scale=request.cfg_scale, width=request.width, height=request.height,
             generator=torch.Generator().manual_seed(request.seed))  # fmt: skip

    plain = timed(image)

    def load_and_fuse() -> None:
        pipe.load_lora_weights(str(path), adapter_name="bench")
        pipe.fuse_lora(lora_scale=1.0)

    apply = timed(load_and_fuse)
    probe = resolve_module(model, PROBE).weight.detach().float().clone()
    first = apply + timed(image)

    def switch() -> None:
        pipe.unfuse_lora()
        pipe.fuse_lora(lora_scale=0.5)

    switch_time = timed(switch)

    def remove() -> None:
        pipe.unfuse_lora()
        pipe.unload_lora_weights()

    none_time = timed(remove)
    return dict(plain=plain, first=first, apply=apply, switch=switch_time, none=none_time, probe=probe)


def report(ours: dict, theirs: dict, modules: int) -> None:
    mib = 1 << 20
    rows = [
        ("first image with the LoRA (cold)", ours["first"], theirs["first"]),
        ("apply, cold (diffusers: load+fuse)", ours["cold"], theirs["apply"]),
        ("apply with deltas cached (2nd job)", ours["apply_cached"], theirs["apply"]),
        ("switch weight 1 -> 0.5 (within a job)", ours["switch"], theirs["switch"]),
        ("  between jobs (undo, apply at 0.5)", ours["across"], theirs["switch"]),
        ("back to no LoRA", ours["none"], theirs["none"]),
    ]
    print(f"\nkohya rank-{RANK} LoRA on {modules} modules; image without LoRA: ours {ours['plain']:.2f} s, "
          f"diffusers {theirs['plain']:.2f} s")  # fmt: skip
    print(f"{'':42s} {'ours':>9s} {'diffusers':>10s} {'ratio':>7s}   ({CLOCK[0].__name__})")
    for label, mine, other in rows:
        print(f"{label:42s} {mine:8.3f}s {other:9.3f}s {mine / other:7.2f}")
    print(f"RAM held after the first LoRA job: {ours['held'] / mib:.0f} MiB (RSS growth); the LoRA RAM budget "
          f"(limit {ours['cache_limit'] / mib:.0f} MiB) holds {ours['cache_bytes'] / mib:.0f} MiB of cached "
          f"differences and, during a job, {ours['copies'] / mib:.0f} MiB of copies of the patched weights "
          "(freed at the job's end; the C allocator keeps their pages for the next job's copies)")  # fmt: skip
    diff = (ours["probe"] - theirs["probe"]).abs().max().item()
    print(f"same patched weight as diffusers at weight 1 ({PROBE}): max |difference| {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--full-size", action="store_true", help="the real SDXL sizes (2.6B U-Net)")
    parser.add_argument("--small", action="store_true", help="0.4x U-Net channels, for quick runs")
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (fp16)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time")
    args = parser.parse_args()
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = bench_model(bench_config(args.full_size, args.size, args.small), device, dtype, args.size)
    params = sum(p.numel() for p in model.unet.parameters()) / 1e6
    print(f"SDXL-shaped model ({'full size' if args.full_size else 'U-Net channels halved, 4-layer text encoders'})"
          f": U-Net {params:.0f}M parameters, {dtype}, {device}, {args.size}x{args.size}, {args.steps} steps")  # fmt: skip
    request = Txt2ImgRequest(prompt="a photo of a cat", negative_prompt="blurry", seed=1, steps=args.steps,
                             cfg_scale=7.0, sampler_name="Euler", width=args.size, height=args.size)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.safetensors"
        modules = write_kohya_lora(model, path)
        # an untimed image first: the process's first image pays one-time set-up (kernels, allocator) that
        # would otherwise count against whichever side runs first
        generate(model, request, JobContext(), EngineSettings(save_images=False))
        ours = run_ours(model, Path(folder), request)
        theirs = run_diffusers(model, path, request)
    report(ours, theirs, modules)
    print(
        f"CPU time of the whole run: {time.process_time():.1f} s (the machine may be shared: compare ratios)"
    )


if __name__ == "__main__":
    main()
