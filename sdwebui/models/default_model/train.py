"""Training loop of the embedded default model: VAE first, then U-Net + text encoder on cached latents.

Stage 1 trains the AutoencoderKL on a pool of rendered scenes, stage 2 fine-tunes its decoder alone.
Stage 3 encodes a pool of scenes once, then trains the U-Net and the CLIP text encoder together
(SD's loss for the configured prediction type, caption dropout for CFG, EMA). Intermediate EMA weights
are exported as a single-file checkpoint every ``save_every`` steps so that a crash loses little.

Each stage takes a step count and, optionally, a time budget in minutes: the stage times its first
steps (still inside the warm-up, whose learning rates do not depend on the total) and then fixes its
total to what fits. The log prints the total, so ``--*-steps N`` reproduces the run exactly.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from PIL import Image

from sdwebui.models.default_model import architecture, dataset, quality
from sdwebui.models.tokenizer import build_clip_tokenizer


@dataclass(frozen=True)
class TrainConfig:
    output: Path
    work_dir: Path = Path("/tmp/default_model_work")
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    workers: int = 0  # processes that render the scene pools; 0 = one per CPU
    image_pool: int = 60_000  # rendered scenes the VAE stages sample from
    vae_steps: int = 2411
    vae_batch: int = 128
    vae_lr: float = 2e-3
    vae_minutes: float | None = None
    # Applied to the per-element mean KL, with the reconstruction a per-pixel mean: ~10x SD's ratio.
    # Much more (e.g. a summed KL) pulls latents together and shape colours come back wrong.
    kl_weight: float = 1e-6
    # Then the decoder alone, encoder frozen (as SD's ft-MSE VAE): sharper edges, same latent space.
    decoder_steps: int = 2126
    decoder_lr: float = 1e-3
    decoder_minutes: float | None = None
    latent_pool: int = 60_000
    latent_std: float = 1.0
    unet_channels: tuple[int, ...] = tuple(architecture.UNET_CONFIG["block_out_channels"])
    unet_steps: int = 3695
    unet_minutes: float | None = None
    batch: int = 512
    lr: float = 8e-4
    warmup_steps: int = 100
    # The text encoder can start frozen and train at a lower rate (useful for short runs where it may
    # collapse before the U-Net uses it); the shipped model trains it from the first step at full rate.
    text_encoder_freeze_steps: int = 0
    text_encoder_lr_scale: float = 1.0
    caption_dropout: float = 0.1
    two_shape_fraction: float = 0.1
    # Share of two-shape scenes captioned with one of their shapes only: "a green square" may sit beside
    # something unmentioned, which is what inpainting a shape next to an existing one asks for.
    partial_caption_fraction: float = 0.0
    resume_from: Path | None = None
    high_noise_fraction: float = 0.3
    high_noise_min_t: int = 600
    # v-prediction with zero terminal SNR: at t=T the input holds nothing of the image, so the layout
    # (where the shape goes) must come from the text. With SD's schedule the leftover signal at t=T
    # decided it and position words were ignored.
    scheduler: dict = field(
        default_factory=lambda: architecture.scheduler_config(
            prediction_type="v_prediction", zero_terminal_snr=True
        )
    )
    ema_max_decay: float = 0.999
    save_every: int = 2500
    log_every: int = 25
    retrain_vae: bool = False
    replace_vae: Path | None = None
    eval_prompts: int = 32
    fp16_export: bool = True


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class StepBudget:
    """The number of steps of a stage: ``steps``, or fewer if ``minutes`` would be exceeded.

    The rate is measured from step ``probe // 4`` on (the first steps carry one-off costs: CUDA start-up,
    cuDNN algorithm search). The total is first fixed at step ``probe`` (not after the warm-up, so the
    learning rates seen until then do not depend on it) and re-planned every tenth of the way until
    half-way, since a shared machine's speed changes: the cosine schedule then bends a little.
    """

    def __init__(self, name: str, steps: int, minutes: float | None, probe: int) -> None:
        self.name, self.requested, self.total, self.minutes, self.probe = name, steps, steps, minutes, probe
        self.started = time.time()
        self.probe_started = self.started
        self.next_plan = probe

    def update(self, done: int) -> None:
        if self.minutes is None:
            return
        if done == self.probe // 4:
            self.probe_started = time.time()
        if done != self.next_plan or done > self.total // 2 and done != self.probe:
            return
        rate = (time.time() - self.probe_started) / (done - self.probe // 4)
        fits = done + int((self.minutes * 60 - (time.time() - self.started)) / rate)
        planned = max(done + 1, min(self.requested, fits))
        if done == self.probe or abs(planned - self.total) > 0.02 * self.total:
            self.total = planned
            log(f"{self.name}: {rate:.3f} s/step; {self.total} steps in the {self.minutes:g}-minute budget")
        self.next_plan = done + max(self.probe, self.total // 10)

    def eta_minutes(self, done: int) -> float:
        return (time.time() - self.started) / max(1, done) * (self.total - done) / 60


def _render_chunk(scenes: list[dataset.Scene]) -> np.ndarray:
    return np.stack([np.asarray(dataset.render(s), dtype=np.uint8) for s in scenes])


def render_pool(scenes: list[dataset.Scene], workers: int = 0) -> torch.Tensor:
    """Renders scenes as a uint8 NHWC tensor, in worker processes (rendering is PIL, single-threaded)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(scenes) < 512:
        return torch.from_numpy(_render_chunk(scenes))
    chunks = [scenes[i : i + 256] for i in range(0, len(scenes), 256)]
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        return torch.from_numpy(np.concatenate(list(pool.map(_render_chunk, chunks))))


def to_model_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] (as ``dataset.to_tensor_array``)."""
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_scenes(seed: int, count: int, two_shape_fraction: float = 0.1) -> list[dataset.Scene]:
    rng = random.Random(seed)
    return [dataset.random_scene(rng, two_shape_fraction) for _ in range(count)]


def training_caption(rng: random.Random, cfg: TrainConfig, scene: dataset.Scene) -> str:
    if rng.random() < cfg.caption_dropout:
        return ""
    parts = dataset.random_caption_parts(rng)
    if len(scene.shapes) > 1 and rng.random() < cfg.partial_caption_fraction:
        return dataset.caption(scene, parts, only=rng.randrange(len(scene.shapes)))
    return dataset.caption(scene, parts)


def _train_on_pool(
    cfg: TrainConfig,
    stage: StepBudget,
    params: list[torch.nn.Parameter],
    lr: float,
    warmup: int,
    pool: torch.Tensor,
    generator: torch.Generator,
    step_loss,
) -> None:
    """The VAE stages' loop: AdamW with warm-up + cosine, batches drawn from the rendered pool.

    ``step_loss(images) -> (loss, log text)``.
    """
    device = torch.device(cfg.device)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    step = 0
    while step < stage.total:
        for group in optimizer.param_groups:
            group["lr"] = lr * _lr_factor(step, warmup, stage.total)
        index = torch.randint(0, len(pool), (cfg.vae_batch,), generator=generator)
        loss, text = step_loss(to_model_input(pool[index].to(device)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        stage.update(step)
        if step % cfg.log_every == 0 or step == stage.total:
            log(f"{stage.name} step {step}/{stage.total} {text()} eta {stage.eta_minutes(step):.1f} min")


def train_vae(cfg: TrainConfig, pool: torch.Tensor) -> torch.nn.Module:
    vae = architecture.build_vae().to(torch.device(cfg.device))

    def step_loss(images):
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec_loss = F.l1_loss(recon, images) + F.mse_loss(recon, images)
        kl_loss = posterior.kl().mean() / posterior.mean[0].numel()
        return (
            rec_loss + cfg.kl_weight * kl_loss,
            lambda: f"rec {rec_loss.item():.4f} kl {kl_loss.item():.2f}",
        )

    stage = StepBudget("vae", cfg.vae_steps, cfg.vae_minutes, probe=20)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    _train_on_pool(cfg, stage, list(vae.parameters()), cfg.vae_lr, 50, pool, generator, step_loss)
    vae.eval()
    log(f"vae reconstruction accuracy: {quality.format_scores(reconstruction_scores(vae, cfg))}")
    return vae


def finetune_decoder(cfg: TrainConfig, vae: torch.nn.Module, pool: torch.Tensor) -> torch.nn.Module:
    """Train only the decoder side; the latents the U-Net learns on stay exactly the same."""
    device = torch.device(cfg.device)
    vae.train()
    generator = torch.Generator().manual_seed(cfg.seed + 6)

    def step_loss(images):
        with torch.no_grad():
            posterior = vae.encode(images).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator).to(device)
            latents = posterior.mean + posterior.std * noise
        recon = vae.decode(latents).sample
        loss = F.l1_loss(recon, images) + F.mse_loss(recon, images)
        return loss, lambda: f"rec {loss.item():.4f}"

    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    stage = StepBudget("decoder", cfg.decoder_steps, cfg.decoder_minutes, probe=20)
    _train_on_pool(cfg, stage, params, cfg.decoder_lr, 20, pool, generator, step_loss)
    vae.eval()
    log(
        f"vae reconstruction accuracy after decoder fine-tune: {quality.format_scores(reconstruction_scores(vae, cfg))}"
    )
    return vae


@torch.no_grad()
def reconstruction_scores(vae: torch.nn.Module, cfg: TrainConfig, count: int = 200) -> dict[str, float]:
    """Attribute accuracy of VAE round trips of held-out scenes (a ceiling for the whole model)."""
    scenes = dataset.held_out_scenes(count)
    images = to_model_input(render_pool(scenes, 1)).to(cfg.device)
    recon = vae.decode(vae.encode(images).latent_dist.mean).sample.cpu()
    arrays = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return quality.score([Image.fromarray(a) for a in arrays], scenes)


@torch.no_grad()
def encode_pool(cfg: TrainConfig, vae: torch.nn.Module) -> tuple[torch.Tensor, list[dataset.Scene]]:
    """(posterior means on the training device, scenes) of ``latent_pool`` training scenes."""
    device = torch.device(cfg.device)
    scenes = random_scenes(cfg.seed + 2, cfg.latent_pool, cfg.two_shape_fraction)
    pixels = render_pool(scenes, cfg.workers)
    means = [
        vae.encode(to_model_input(pixels[i : i + 1024].to(device))).latent_dist.mean
        for i in range(0, len(pixels), 1024)
    ]
    means = torch.cat(means)
    log(f"encoded {len(scenes)} scenes into latents of shape {tuple(means.shape[1:])}")
    return means, scenes


class CaptionTokens:
    """Tokenizes captions with the real CLIP tokenizer, memoised (the grammar is small)."""

    def __init__(self) -> None:
        self.tokenizer = build_clip_tokenizer()
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in set(captions) if c not in self.cache]
        if missing:
            ids = self.tokenizer(
                missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            self.cache.update(zip(missing, ids, strict=True))
        return torch.stack([self.cache[c] for c in captions])


def sample_timesteps(generator: torch.Generator, cfg: TrainConfig, count: int) -> torch.Tensor:
    uniform = torch.randint(0, 1000, (count,), generator=generator)
    high = torch.randint(cfg.high_noise_min_t, 1000, (count,), generator=generator)
    pick_high = torch.rand(count, generator=generator) < cfg.high_noise_fraction
    return torch.where(pick_high, high, uniform)


def diffusion_target(prediction_type: str, latents, noise, alpha_bar) -> torch.Tensor:
    """What the U-Net learns to output: the noise (eps) or the velocity (v = sqrt(a) eps - sqrt(1-a) x0)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    raise ValueError(f"unsupported prediction_type {prediction_type!r}: expected epsilon or v_prediction")


def train_unet(
    cfg: TrainConfig, vae: torch.nn.Module, on_checkpoint, start: tuple | None = None
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Trains from scratch, or continues from ``start`` = (unet, text_encoder) with the VAE's own scale."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    means, scenes = encode_pool(cfg, vae)
    if start is None:
        scaling = cfg.latent_std / means.std().item()
        vae.register_to_config(scaling_factor=scaling)
        log(f"latent std {means.std().item():.3f} -> scaling_factor {scaling:.4f}")
        unet = architecture.build_unet(architecture.unet_config(cfg.unet_channels))
        text_encoder = architecture.build_text_encoder()
    else:
        scaling = vae.config.scaling_factor
        unet, text_encoder = start
        log(f"continuing from the given U-Net and text encoder; scaling_factor {scaling:.4f}")
    unet, text_encoder = unet.to(device).train(), text_encoder.to(device).train()
    log(
        f"u-net {sum(p.numel() for p in unet.parameters()) / 1e6:.1f}M params, text encoder "
        f"{sum(p.numel() for p in text_encoder.parameters()) / 1e6:.1f}M"
    )
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": list(unet.parameters()), "lr_scale": 1.0},
            {"params": list(text_encoder.parameters()), "lr_scale": 0.0},
        ],
        lr=cfg.lr,
        weight_decay=0.01,
    )
    ema = EMAModel(params, decay=cfg.ema_max_decay, use_ema_warmup=True, power=0.75)
    alphas = architecture.build_scheduler(cfg.scheduler).alphas_cumprod.to(device)
    prediction_type = cfg.scheduler["prediction_type"]
    tokens = CaptionTokens()
    rng = random.Random(cfg.seed + 3)
    generator = torch.Generator().manual_seed(cfg.seed + 4)
    budget = StepBudget("u-net", cfg.unet_steps, cfg.unet_minutes, probe=min(30, cfg.warmup_steps))
    running = torch.zeros((), device=device)
    done = 0
    while done < budget.total:
        step = done
        optimizer.param_groups[1]["lr_scale"] = (
            cfg.text_encoder_lr_scale if step >= cfg.text_encoder_freeze_steps else 0.0
        )
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * group["lr_scale"] * _lr_factor(step, cfg.warmup_steps, budget.total)
        index = torch.randint(0, len(scenes), (cfg.batch,), generator=generator)
        captions = [training_caption(rng, cfg, scenes[i]) for i in index.tolist()]
        ids = tokens(captions).to(device)
        # Posterior means: the weakly regularised posterior is noisy (std ~15% of the latent spread)
        # and that noise would be learnt as texture.
        latents = means[index.to(means.device)] * scaling
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = sample_timesteps(generator, cfg, cfg.batch).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        context = text_encoder(ids)[0]
        pred = unet(noisy, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred, diffusion_target(prediction_type, latents, noise, a))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.step(params)
        running += loss.detach()
        done = step + 1
        budget.update(done)
        if done % cfg.log_every == 0 or done == budget.total:
            log(
                f"unet step {done}/{budget.total} loss {running.item() / cfg.log_every:.4f} "
                f"eta {budget.eta_minutes(done):.1f} min"
            )
            running.zero_()
        if done % cfg.save_every == 0 or done == budget.total:
            ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
            ema.copy_to(list(ema_unet.parameters()) + list(ema_text.parameters()))
            on_checkpoint(done, ema_unet, ema_text)
    return unet, text_encoder
