"""Train the embedded default model from scratch and export it as a single-file SD1-layout checkpoint.

Reproduce the shipped model (about 70 minutes on a 2-core CPU, a few minutes on a GPU):

    .venv/bin/python scripts/train_default_model.py --output models/default/shapes64.safetensors

Everything is seeded (--seed); progress and an accuracy estimate are printed while it trains. The EMA
weights are exported every --save-every steps (same path), so the latest export is always usable.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

# Set before torch loads OpenMP: on a shared, busy CPU, spinning worker threads waste most of their time
# (a VAE step measured 4x the CPU time and 7x the wall time with the default policy).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modules.default_model import architecture, pipeline, quality  # noqa: E402
from modules.default_model.train import (  # noqa: E402
    TrainConfig,
    finetune_decoder,
    log,
    reconstruction_scores,
    train_unet,
    train_vae,
)
from modules.sd_models.ldm_export import save_single_file  # noqa: E402
from modules.sd_models.model import ModelFamily  # noqa: E402


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig(output=Path("models/default/shapes64.safetensors"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=defaults.output, help="checkpoint path (.safetensors)")
    p.add_argument("--work-dir", type=Path, default=defaults.work_dir, help="trained VAE is kept here")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=defaults.device, help="cpu or cuda")
    p.add_argument("--threads", type=int, default=defaults.threads, help="CPU threads for torch")
    p.add_argument("--vae-steps", type=int, default=defaults.vae_steps)
    p.add_argument("--unet-steps", type=int, default=defaults.unet_steps)
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--latent-pool", type=int, default=defaults.latent_pool)
    p.add_argument("--save-every", type=int, default=defaults.save_every)
    p.add_argument(
        "--eval-prompts",
        type=int,
        default=defaults.eval_prompts,
        help="held-out prompts sampled at each export to print accuracy (0 = off)",
    )
    p.add_argument("--decoder-steps", type=int, default=defaults.decoder_steps)
    p.add_argument("--lr", type=float, default=defaults.lr, help="U-Net peak learning rate")
    p.add_argument(
        "--text-encoder-freeze-steps",
        type=int,
        default=defaults.text_encoder_freeze_steps,
        help="U-Net steps before the text encoder starts training",
    )
    p.add_argument(
        "--text-encoder-lr-scale",
        type=float,
        default=defaults.text_encoder_lr_scale,
        help="text encoder learning rate relative to --lr",
    )
    p.add_argument(
        "--high-noise-fraction",
        type=float,
        default=defaults.high_noise_fraction,
        help="share of training timesteps drawn from t >= 600",
    )
    p.add_argument("--retrain-vae", action="store_true", help="train the VAE even if work-dir has one")
    p.add_argument(
        "--replace-vae",
        type=Path,
        default=None,
        metavar="VAE_DIR",
        help="only re-export --output with the diffusers VAE in VAE_DIR (its latent scale kept)",
    )
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but torch sees no CUDA device")
    return TrainConfig(
        output=a.output,
        work_dir=a.work_dir,
        seed=a.seed,
        device=a.device,
        threads=a.threads,
        vae_steps=a.vae_steps,
        unet_steps=a.unet_steps,
        batch=a.batch,
        latent_pool=a.latent_pool,
        save_every=a.save_every,
        eval_prompts=a.eval_prompts,
        retrain_vae=a.retrain_vae,
        lr=a.lr,
        text_encoder_freeze_steps=a.text_encoder_freeze_steps,
        text_encoder_lr_scale=a.text_encoder_lr_scale,
        high_noise_fraction=a.high_noise_fraction,
    )


def load_or_train_vae(cfg: TrainConfig):
    vae_dir = cfg.work_dir / "vae"
    if vae_dir.is_dir() and not cfg.retrain_vae:
        log(f"using the VAE already trained in {vae_dir}")
        import diffusers

        vae = diffusers.AutoencoderKL.from_pretrained(vae_dir).to(cfg.device).eval()
        log(f"vae reconstruction accuracy: {quality.format_scores(reconstruction_scores(vae, cfg))}")
        return vae
    vae = train_vae(cfg)
    vae.save_pretrained(vae_dir)
    vae = finetune_decoder(cfg, vae)
    vae.save_pretrained(vae_dir)
    return vae


def export(cfg: TrainConfig, vae, step: int, unet, text_encoder) -> None:
    path = save_single_file(
        cfg.output,
        ModelFamily.SD1,
        unet,
        vae,
        [text_encoder],
        architecture.SCHEDULER_CONFIG,
        native_resolution=architecture.NATIVE_RESOLUTION,
        dtype=torch.float16 if cfg.fp16_export else None,
    )
    log(f"step {step}: exported {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if cfg.eval_prompts:
        pipe = pipeline.build_pipeline(unet, vae, text_encoder)
        generate = partial(_generate, pipe)
        for cfg_scale in (7.0, 1.0):
            scores = quality.evaluate_held_out(generate, cfg.eval_prompts, cfg_scale, batch=cfg.eval_prompts)
            log(f"step {step}: held-out accuracy at CFG {cfg_scale:g}: {quality.format_scores(scores)}")


def _generate(pipe, prompts, seeds, negative_prompts, cfg_scale):
    return pipeline.generate(pipe, prompts, seeds, negative_prompts, cfg_scale=cfg_scale, steps=15)


def replace_vae(cfg: TrainConfig) -> None:
    """Swap a further fine-tuned decoder into an exported checkpoint (same encoder, same latents)."""
    import diffusers

    from modules.default_model import backends

    model = backends.load(cfg.output)
    vae = diffusers.AutoencoderKL.from_pretrained(cfg.replace_vae)
    vae.register_to_config(scaling_factor=model.vae.config.scaling_factor)
    export(cfg, vae, 0, model.unet.float(), model.text_encoders[0].float())


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.replace_vae is not None:
        replace_vae(cfg)
        return
    log(f"training the default model: {cfg}")
    vae = load_or_train_vae(cfg)
    train_unet(cfg, vae, on_checkpoint=partial(export, cfg, vae))
    log("done")


if __name__ == "__main__":
    main()
