"""Training loop of the embedded default model: VAE first, then U-Net + text encoder on cached latents.

Stage 1 trains the AutoencoderKL on freshly rendered scenes. Stage 2 encodes a pool of scenes once, then
trains the U-Net and the CLIP text encoder together (eps-prediction, SD's scaled-linear betas, caption
dropout for CFG, EMA). Intermediate EMA weights are exported as a single-file checkpoint every
``save_every`` steps so that a crash loses little.

A share of the timesteps is drawn from the noisy end (``high_noise_fraction``): there the layout is not
yet decided by the noise, so that is where position words (and the other words) must be learnt.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from PIL import Image

from modules.default_model import architecture, dataset, quality
from modules.sd_models.tokenizer import build_clip_tokenizer


@dataclass(frozen=True)
class TrainConfig:
    output: Path
    work_dir: Path = Path("/tmp/default_model_work")
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    vae_steps: int = 400
    vae_batch: int = 32
    vae_lr: float = 2e-3
    # Applied to the per-element mean KL, with the reconstruction a per-pixel mean: ~10x SD's ratio.
    # Much more (e.g. a summed KL) pulls latents together and shape colours come back wrong.
    kl_weight: float = 1e-6
    # Then the decoder alone, encoder frozen (as SD's ft-MSE VAE): sharper edges, same latent space.
    decoder_steps: int = 800
    decoder_lr: float = 1e-3
    latent_pool: int = 12_000
    latent_std: float = 1.0
    unet_steps: int = 1800
    batch: int = 64
    lr: float = 8e-4
    warmup_steps: int = 100
    # The text encoder starts frozen through the warm-up (random CLIP features are already distinct per
    # caption) and then trains at a lower rate: at full rate from step one its outputs collapsed towards
    # one vector while the U-Net could not yet use them.
    text_encoder_freeze_steps: int = 100
    text_encoder_lr_scale: float = 0.5
    caption_dropout: float = 0.1
    high_noise_fraction: float = 0.3
    high_noise_min_t: int = 600
    ema_max_decay: float = 0.999
    save_every: int = 450
    log_every: int = 25
    retrain_vae: bool = False
    replace_vae: Path | None = None
    eval_prompts: int = 16
    fp16_export: bool = True
    extra: dict = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def render_batch(rng: random.Random, count: int) -> torch.Tensor:
    images = [dataset.render(dataset.random_scene(rng)) for _ in range(count)]
    return torch.from_numpy(np.stack([dataset.to_tensor_array(im) for im in images]))


def train_vae(cfg: TrainConfig) -> torch.nn.Module:
    device = torch.device(cfg.device)
    vae = architecture.build_vae().to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    rng = random.Random(cfg.seed + 1)
    started = time.time()
    for step in range(cfg.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = cfg.vae_lr * _lr_factor(step, 50, cfg.vae_steps)
        images = render_batch(rng, cfg.vae_batch).to(device)
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec_loss = F.l1_loss(recon, images) + F.mse_loss(recon, images)
        kl_loss = posterior.kl().mean() / posterior.mean[0].numel()
        loss = rec_loss + cfg.kl_weight * kl_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % cfg.log_every == 0 or step == cfg.vae_steps - 1:
            eta = (time.time() - started) / (step + 1) * (cfg.vae_steps - step - 1)
            log(
                f"vae step {step + 1}/{cfg.vae_steps} rec {rec_loss.item():.4f} kl {kl_loss.item():.2f} "
                f"eta {eta / 60:.1f} min"
            )
    vae.eval()
    log(f"vae reconstruction accuracy: {quality.format_scores(reconstruction_scores(vae, cfg))}")
    return vae


def finetune_decoder(cfg: TrainConfig, vae: torch.nn.Module) -> torch.nn.Module:
    """Train only the decoder side; the latents the U-Net learns on stay exactly the same."""
    device = torch.device(cfg.device)
    vae.train()
    decoder_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimizer = torch.optim.AdamW(decoder_params, lr=cfg.decoder_lr, weight_decay=0.0)
    rng = random.Random(cfg.seed + 5)
    generator = torch.Generator().manual_seed(cfg.seed + 6)
    started = time.time()
    for step in range(cfg.decoder_steps):
        for group in optimizer.param_groups:
            group["lr"] = cfg.decoder_lr * _lr_factor(step, 20, cfg.decoder_steps)
        images = render_batch(rng, cfg.vae_batch).to(device)
        with torch.no_grad():
            posterior = vae.encode(images).latent_dist
            latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(latents.to(device)).sample
        loss = F.l1_loss(recon, images) + F.mse_loss(recon, images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % cfg.log_every == 0 or step == cfg.decoder_steps - 1:
            eta = (time.time() - started) / (step + 1) * (cfg.decoder_steps - step - 1)
            log(f"decoder step {step + 1}/{cfg.decoder_steps} rec {loss.item():.4f} eta {eta / 60:.1f} min")
    vae.eval()
    log(
        f"vae reconstruction accuracy after decoder fine-tune: {quality.format_scores(reconstruction_scores(vae, cfg))}"
    )
    return vae


@torch.no_grad()
def reconstruction_scores(vae: torch.nn.Module, cfg: TrainConfig, count: int = 200) -> dict[str, float]:
    """Attribute accuracy of VAE round trips of held-out scenes (a ceiling for the whole model)."""
    scenes = dataset.held_out_scenes(count)
    images = torch.from_numpy(np.stack([dataset.to_tensor_array(dataset.render(s)) for s in scenes]))
    recon = vae.decode(vae.encode(images.to(cfg.device)).latent_dist.mean).sample.cpu()
    arrays = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return quality.score([Image.fromarray(a) for a in arrays], scenes)


@torch.no_grad()
def encode_pool(cfg: TrainConfig, vae: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(posterior means, posterior stds, scenes) of ``latent_pool`` training scenes."""
    device = torch.device(cfg.device)
    rng = random.Random(cfg.seed + 2)
    means, stds, scenes = [], [], []
    for start in range(0, cfg.latent_pool, 256):
        batch_scenes = [dataset.random_scene(rng) for _ in range(min(256, cfg.latent_pool - start))]
        images = torch.from_numpy(
            np.stack([dataset.to_tensor_array(dataset.render(s)) for s in batch_scenes])
        ).to(device)
        dist = vae.encode(images).latent_dist
        means.append(dist.mean.cpu())
        stds.append(dist.std.cpu())
        scenes.extend(batch_scenes)
    log(f"encoded {len(scenes)} scenes into latents of shape {tuple(means[0].shape[1:])}")
    return torch.cat(means), torch.cat(stds), scenes


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


def train_unet(
    cfg: TrainConfig, vae: torch.nn.Module, on_checkpoint
) -> tuple[torch.nn.Module, torch.nn.Module]:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    means, stds, scenes = encode_pool(cfg, vae)
    scaling = cfg.latent_std / means.std().item()
    vae.register_to_config(scaling_factor=scaling)
    log(f"latent std {means.std().item():.3f} -> scaling_factor {scaling:.4f}")

    unet = architecture.build_unet().to(device).train()
    text_encoder = architecture.build_text_encoder().to(device).train()
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
    scheduler = architecture.build_scheduler()
    alphas = scheduler.alphas_cumprod.to(device)
    tokens = CaptionTokens()
    rng = random.Random(cfg.seed + 3)
    generator = torch.Generator().manual_seed(cfg.seed + 4)
    started = time.time()
    running = 0.0
    for step in range(cfg.unet_steps):
        optimizer.param_groups[1]["lr_scale"] = (
            cfg.text_encoder_lr_scale if step >= cfg.text_encoder_freeze_steps else 0.0
        )
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * group["lr_scale"] * _lr_factor(step, cfg.warmup_steps, cfg.unet_steps)
        index = torch.randint(0, len(scenes), (cfg.batch,), generator=generator)
        captions = [
            ""
            if rng.random() < cfg.caption_dropout
            else dataset.caption(scenes[i], dataset.random_caption_parts(rng))
            for i in index.tolist()
        ]
        ids = tokens(captions).to(device)
        # Posterior means: the weakly regularised posterior is noisy (std ~15% of the latent spread)
        # and that noise would be learnt as texture.
        latents = (means[index] * scaling).to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = sample_timesteps(generator, cfg, cfg.batch).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        context = text_encoder(ids)[0]
        pred = unet(noisy, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.step(params)
        running += loss.item()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.unet_steps:
            rate = (time.time() - started) / done
            log(
                f"unet step {done}/{cfg.unet_steps} loss {running / cfg.log_every:.4f} "
                f"{rate:.2f} s/step eta {rate * (cfg.unet_steps - done) / 60:.1f} min"
            )
            running = 0.0
        if done % cfg.save_every == 0 or done == cfg.unet_steps:
            ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
            ema.copy_to(list(ema_unet.parameters()) + list(ema_text.parameters()))
            on_checkpoint(done, ema_unet, ema_text)
    return unet, text_encoder
