"""Train the embedded default model from scratch and export it as a single-file SD1-layout checkpoint.

Reproduce the shipped model (about 70 minutes on a 2-core CPU, a few minutes on a GPU):

    .venv/bin/python scripts/train_default_model.py --output models/default/shapes64.safetensors

Everything is seeded (--seed); progress and an accuracy estimate are printed while it trains. The EMA
weights are exported every --save-every steps (same path), so the latest export is always usable.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from functools import partial
from pathlib import Path

# Set before torch loads OpenMP: on a shared, busy CPU, spinning worker threads waste most of their time
# (a VAE step measured 4x the CPU time and 7x the wall time with the default policy).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdwebui.engine import default_model_runs as backends  # noqa: E402
from sdwebui.models.default_model import architecture, pipeline, quality  # noqa: E402
from sdwebui.models.default_model.train import (  # noqa: E402
    TrainConfig,
    finetune_decoder,
    log,
    random_scenes,
    reconstruction_scores,
    render_pool,
    train_unet,
    train_vae,
)
from sdwebui.models.ldm_export import save_single_file  # noqa: E402
from sdwebui.models.model import ModelFamily  # noqa: E402

# Stage budgets add up to about 82 minutes; rendering, encoding and exports take the rest of the 90.
PRESETS: dict[str, dict] = {
    "cpu-90min": {
        "device": "cpu",
        "image_pool": 20_000,
        "vae_batch": 32,
        "vae_steps": 100_000,
        "vae_minutes": 12,
        "decoder_steps": 100_000,
        "decoder_minutes": 8,
        "latent_pool": 20_000,
        "batch": 64,
        "unet_channels": (32, 64, 128),
        "unet_steps": 100_000,
        "unet_minutes": 60,
        "save_every": 1000,
        "eval_prompts": 16,
        "two_shape_fraction": 0.25,
        "partial_caption_fraction": 0.5,
    }
}


def _int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


# Plain numeric options: (TrainConfig field, type, help). Their flags are the field names with dashes.
NUMERIC_OPTIONS: list[tuple[str, type, str | None]] = [
    ("seed", int, None),
    ("threads", int, "CPU threads for torch"),
    ("workers", int, "scene-rendering processes (0 = all CPUs)"),
    ("image_pool", int, "scenes the VAE trains on"),
    ("vae_steps", int, None),
    ("vae_batch", int, None),
    ("decoder_steps", int, None),
    ("unet_steps", int, None),
    ("batch", int, "U-Net batch size"),
    ("latent_pool", int, "encoded scenes the U-Net trains on"),
    ("save_every", int, "export the EMA weights every N U-Net steps"),
    ("eval_prompts", int, "held-out prompts sampled at each export to print accuracy (0 = off)"),
    ("lr", float, "U-Net peak learning rate"),
    ("text_encoder_freeze_steps", int, "U-Net steps before the text encoder starts training"),
    ("text_encoder_lr_scale", float, "text encoder learning rate relative to --lr"),
    ("high_noise_fraction", float, "share of training timesteps drawn from t >= 600"),
    ("two_shape_fraction", float, "share of training scenes with two shapes"),
    ("partial_caption_fraction", float, "share of two-shape scenes captioned with one shape only"),
]


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig(output=Path("models/default/shapes64.safetensors"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=defaults.output, help="checkpoint path (.safetensors)")
    p.add_argument("--work-dir", type=Path, default=defaults.work_dir, help="trained VAE is kept here")
    p.add_argument("--device", default=defaults.device, help="cpu or cuda")
    for name, kind, text in NUMERIC_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name), help=text)
    for stage in ("vae", "decoder", "unet"):
        p.add_argument(
            f"--{stage}-minutes",
            type=float,
            default=None,
            help=f"time budget of the {stage} stage: fewer steps if they would not fit (the log says how many)",
        )
    p.add_argument(
        "--unet-channels",
        type=_int_tuple,
        default=defaults.unet_channels,
        help="U-Net block widths, comma-separated (default %(default)s)",
    )
    sched = defaults.scheduler
    p.add_argument("--beta-schedule", default=sched["beta_schedule"], choices=("scaled_linear", "linear"))
    p.add_argument("--beta-start", type=float, default=sched["beta_start"])
    p.add_argument("--beta-end", type=float, default=sched["beta_end"])
    p.add_argument("--prediction-type", default=sched["prediction_type"], choices=("epsilon", "v_prediction"))
    p.add_argument(
        "--zero-terminal-snr",
        action=argparse.BooleanOptionalAction,
        default=bool(sched.get("rescale_betas_zero_snr")),
        help="rescale the betas so that the last timestep is pure noise (needs v-prediction)",
    )
    p.add_argument(
        "--resume-from",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="continue training this exported checkpoint (its VAE, U-Net and text encoder, whose sizes "
        "win over --unet-channels; the schedule flags must match it)",
    )
    p.add_argument("--retrain-vae", action="store_true", help="train the VAE even if work-dir has one")
    p.add_argument(
        "--replace-vae",
        type=Path,
        default=None,
        metavar="VAE_DIR",
        help="only re-export --output with the diffusers VAE in VAE_DIR (its latent scale kept)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="cpu-90min: the whole training on a 2-core CPU in about 90 minutes (time budgets, smaller "
        "batches and U-Net); explicit flags still win",
    )
    chosen, _ = p.parse_known_args(argv)
    if chosen.preset:
        p.set_defaults(**PRESETS[chosen.preset])
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but torch sees no CUDA device")
    try:
        scheduler = architecture.scheduler_config(
            a.beta_schedule, a.beta_start, a.beta_end, a.prediction_type, a.zero_terminal_snr
        )
        architecture.unet_config(a.unet_channels)
    except ValueError as error:
        p.error(str(error))
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(a, f.name)}
    return TrainConfig(**given, scheduler=scheduler)


def load_or_train_vae(cfg: TrainConfig):
    vae_dir = cfg.work_dir / "vae"
    if vae_dir.is_dir() and not cfg.retrain_vae:
        log(f"using the VAE already trained in {vae_dir}")
        import diffusers

        vae = diffusers.AutoencoderKL.from_pretrained(vae_dir).to(cfg.device).eval()
        log(f"vae reconstruction accuracy: {quality.format_scores(reconstruction_scores(vae, cfg))}")
        return vae
    pool = render_pool(random_scenes(cfg.seed + 1, cfg.image_pool), cfg.workers).to(cfg.device)
    log(f"rendered {len(pool)} scenes for the VAE")
    vae = train_vae(cfg, pool)
    vae.save_pretrained(vae_dir)
    vae = finetune_decoder(cfg, vae, pool)
    vae.save_pretrained(vae_dir)
    return vae


def export(cfg: TrainConfig, vae, step: int, unet, text_encoder) -> None:
    path = save_single_file(
        cfg.output,
        ModelFamily.SD1,
        unet,
        vae,
        [text_encoder],
        cfg.scheduler,
        native_resolution=architecture.NATIVE_RESOLUTION,
        dtype=torch.float16 if cfg.fp16_export else None,
    )
    log(f"step {step}: exported {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if cfg.eval_prompts:
        pipe = pipeline.build_pipeline(unet, vae, text_encoder, cfg.scheduler)
        generate = partial(_generate, pipe)
        for cfg_scale in (7.0, 1.0):
            scores = quality.evaluate_held_out(generate, cfg.eval_prompts, cfg_scale, batch=cfg.eval_prompts)
            log(f"step {step}: held-out accuracy at CFG {cfg_scale:g}: {quality.format_scores(scores)}")


def _generate(pipe, prompts, seeds, negative_prompts, cfg_scale):
    return pipeline.generate(pipe, prompts, seeds, negative_prompts, cfg_scale=cfg_scale, steps=15)


def replace_vae(cfg: TrainConfig) -> None:
    """Swap a further fine-tuned decoder into an exported checkpoint (same encoder, same latents)."""
    import diffusers

    model = backends.load(cfg.output)
    vae = diffusers.AutoencoderKL.from_pretrained(cfg.replace_vae)
    vae.register_to_config(scaling_factor=model.vae.config.scaling_factor)
    cfg = dataclasses.replace(cfg, scheduler=model.scheduler_config)
    export(cfg, vae, 0, model.unet.float(), model.text_encoders[0].float())


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.replace_vae is not None:
        replace_vae(cfg)
        return
    log(f"training the default model: {cfg}")
    if cfg.resume_from is not None:
        model = backends.load(cfg.resume_from)
        keys = ("beta_schedule", "beta_start", "beta_end", "prediction_type", "rescale_betas_zero_snr")
        differ = [k for k in keys if model.scheduler_config.get(k) != cfg.scheduler.get(k)]
        if differ:
            raise SystemExit(f"{cfg.resume_from} was trained with another schedule ({', '.join(differ)})")
        modules = [m.float().to(cfg.device) for m in (model.vae, model.unet, model.text_encoders[0])]
        vae, unet, text_encoder = modules
        unet.requires_grad_(True), text_encoder.requires_grad_(True)
        train_unet(cfg, vae.eval(), on_checkpoint=partial(export, cfg, vae), start=(unet, text_encoder))
        log("done")
        return
    vae = load_or_train_vae(cfg)
    if cfg.unet_steps == 0:
        log(f"--unet-steps 0: only the VAE was trained ({cfg.work_dir / 'vae'})")
        return
    train_unet(cfg, vae, on_checkpoint=partial(export, cfg, vae))
    log("done")


if __name__ == "__main__":
    main()
