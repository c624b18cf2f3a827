"""depth_midas / normal_midas: MiDaS DPT-Hybrid (`midas/dpt_hybrid-midas-501f0c75.pt`, a ViT-B/16 on a
ResNet-50 BiT stem) as transformers' hybrid DPTForDepthEstimation, with the extension's processing: the padded
image at the processor resolution goes in as is (scaled to -1..1, no 384 px resize), the inverse depth is
spread over 0..255 per image (near is bright); normal_midas takes Sobel slopes of that depth, flat where
the spread depth is under the background threshold.

The file keeps the original (timm) key layout; `to_transformers` renames it and splits each block's qkv.
Sizes come from the file: ViT width and depth, BiT stem width, stage depths and widths, the neck's widths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch import nn

from sdwebui.engine.controlnet.preprocessors.imaging import resize_with_pad
from sdwebui.engine.controlnet.preprocessors.params import PreprocessParams
from sdwebui.engine.controlnet.preprocessors.weights import image_tensor, network

if TYPE_CHECKING:
    from transformers import DPTConfig

WEIGHTS = "midas/dpt_hybrid-midas-501f0c75.pt"
PATCH = 16
_VIT = "pretrained.model."
_BIT = _VIT + "patch_embed.backbone."
_SLOPE_Z = 2 * math.pi  # the extension's `a`: the normal's z against the depth's pixel slopes

# (original, transformers) key patterns, first match wins; \1, \2 carry indices and the leaf name.
_RENAMES = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"pretrained\.model\.patch_embed\.backbone\.stem\.conv\.(.*)", r"dpt.embeddings.backbone.bit.embedder.convolution.\1"),
        (r"pretrained\.model\.patch_embed\.backbone\.stem\.norm\.(.*)", r"dpt.embeddings.backbone.bit.embedder.norm.\1"),
        (r"pretrained\.model\.patch_embed\.backbone\.stages\.(\d+)\.blocks\.(.*)", r"dpt.embeddings.backbone.bit.encoder.stages.\1.layers.\2"),
        (r"pretrained\.model\.patch_embed\.proj\.(.*)", r"dpt.embeddings.projection.\1"),
        (r"pretrained\.model\.cls_token", r"dpt.embeddings.cls_token"),
        (r"pretrained\.model\.pos_embed", r"dpt.embeddings.position_embeddings"),
        (r"pretrained\.model\.blocks\.(\d+)\.norm1\.(.*)", r"dpt.encoder.layer.\1.layernorm_before.\2"),
        (r"pretrained\.model\.blocks\.(\d+)\.norm2\.(.*)", r"dpt.encoder.layer.\1.layernorm_after.\2"),
        (r"pretrained\.model\.blocks\.(\d+)\.attn\.proj\.(.*)", r"dpt.encoder.layer.\1.attention.output.dense.\2"),
        (r"pretrained\.model\.blocks\.(\d+)\.mlp\.fc1\.(.*)", r"dpt.encoder.layer.\1.intermediate.dense.\2"),
        (r"pretrained\.model\.blocks\.(\d+)\.mlp\.fc2\.(.*)", r"dpt.encoder.layer.\1.output.dense.\2"),
        (r"pretrained\.model\.norm\.(.*)", r"dpt.layernorm.\1"),
        (r"pretrained\.act_postprocess(\d)\.0\.project\.0\.(.*)", r"neck.reassemble_stage.readout_projects.<\1>.0.\2"),
        (r"pretrained\.act_postprocess(\d)\.3\.(.*)", r"neck.reassemble_stage.layers.<\1>.projection.\2"),
        (r"pretrained\.act_postprocess(\d)\.4\.(.*)", r"neck.reassemble_stage.layers.<\1>.resize.\2"),
        (r"scratch\.layer(\d)_rn\.(.*)", r"neck.convs.<\1>.\2"),
        (r"scratch\.refinenet(\d)\.out_conv\.(.*)", r"neck.fusion_stage.layers.[\1].projection.\2"),
        (r"scratch\.refinenet(\d)\.resConfUnit(\d)\.conv(\d)\.(.*)", r"neck.fusion_stage.layers.[\1].residual_layer\2.convolution\3.\4"),
        (r"scratch\.output_conv\.(.*)", r"head.head.\1"),
    )
)  # fmt: skip


def _renamed(key: str) -> str | None:
    """The transformers name of an original key; <n> is n - 1 (1-based there), [n] is 4 - n (the fusion
    stages run from the coarsest); None for what the depth model has no place for."""
    for pattern, replacement in _RENAMES:
        if pattern.fullmatch(key):
            name = pattern.sub(replacement, key)
            name = re.sub(r"<(\d)>", lambda m: str(int(m.group(1)) - 1), name)
            return re.sub(r"\[(\d)\]", lambda m: str(4 - int(m.group(1))), name)
    return None


def to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original state in transformers' names; the classifier head of the ImageNet ViT is dropped and
    an unknown key is kept as is, so that the strict load names it."""
    converted = {}
    for key, value in state.items():
        qkv = re.fullmatch(r"pretrained\.model\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key)
        if qkv is not None:
            prefix = f"dpt.encoder.layer.{qkv.group(1)}.attention.attention."
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                converted[f"{prefix}{part}.{qkv.group(2)}"] = chunk
        elif not key.startswith(_VIT + "head."):
            converted[_renamed(key) or key] = value
    return converted


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


@dataclass(frozen=True)
class HybridSizes:
    """What varies in a DPT-Hybrid; the defaults are the published file's (ViT-B/16 at 384 px on BiT-R50)."""

    hidden: int = 768
    blocks: int = 12
    intermediate: int = 3072
    grid: int = 24  # position embeddings per side
    stem: int = 64
    widths: tuple[int, ...] = (256, 512, 1024)  # BiT stage outputs
    depths: tuple[int, ...] = (3, 4, 9)
    reassembled: tuple[int, int] = (768, 768)  # the neck's widths for the two ViT features
    fusion: int = 256

    @classmethod
    def of(cls, state: dict[str, torch.Tensor]) -> HybridSizes:
        stages = _count(state, _BIT + "stages.")
        return cls(
            hidden=state[_VIT + "cls_token"].shape[-1],
            blocks=_count(state, _VIT + "blocks."),
            intermediate=state[_VIT + "blocks.0.mlp.fc1.weight"].shape[0],
            grid=int(math.sqrt(state[_VIT + "pos_embed"].shape[1] - 1)),
            stem=state[_BIT + "stem.conv.weight"].shape[0],
            widths=tuple(state[f"{_BIT}stages.{i}.blocks.0.conv3.weight"].shape[0] for i in range(stages)),
            depths=tuple(_count(state, f"{_BIT}stages.{i}.blocks.") for i in range(stages)),
            reassembled=tuple(state[f"pretrained.act_postprocess{i}.3.weight"].shape[0] for i in (3, 4)),
            fusion=state["scratch.layer1_rn.weight"].shape[0],
        )

    def config(self) -> DPTConfig:
        from transformers import BitConfig, DPTConfig  # on first use: importing transformers slows startup

        bit = BitConfig(
            embedding_size=self.stem,
            hidden_sizes=list(self.widths),
            depths=list(self.depths),
            layer_type="bottleneck",
            global_padding="SAME",
            embedding_dynamic_padding=True,
            out_features=[f"stage{i + 1}" for i in range(len(self.widths))],
        )
        return DPTConfig(
            is_hybrid=True,
            backbone_config=bit,
            hidden_size=self.hidden,
            num_hidden_layers=self.blocks,
            num_attention_heads=max(1, self.hidden // 64),
            intermediate_size=self.intermediate,
            layer_norm_eps=1e-6,  # timm's ViT
            image_size=self.grid * PATCH,
            patch_size=PATCH,
            backbone_featmap_shape=[1, self.widths[-1], self.grid, self.grid],
            # the neck reads BiT stages 1 and 2, then two ViT blocks (ViT-B: 8 and 11)
            backbone_out_indices=[0, 1, self.blocks * 3 // 4 - 1, self.blocks - 1],
            reassemble_factors=[1, 1, 1, 0.5],
            neck_hidden_sizes=[*self.widths[:2], *self.reassembled],
            fusion_hidden_size=self.fusion,
            readout_type="project",
        )


class MidasHybrid(nn.Module):
    """[B, 3, H, W] in -1..1 (H, W multiples of 32) -> relative inverse depth [B, H, W]; loads the file's
    original keys (strictly, through `to_transformers`)."""

    def __init__(self, config: DPTConfig):
        from transformers import DPTForDepthEstimation

        super().__init__()
        self.model = DPTForDepthEstimation(config)
        self.hooks = config.backbone_out_indices[2:]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(to_transformers(dict(state_dict)), strict=strict, assign=assign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # DPTModel's own forward takes only its 384 px training size; MiDaS runs at any size, the position
        # embedding resized (bilinear) to the grid, so the pieces are driven here
        embeddings, rows, cols = self.model.dpt.embeddings, x.shape[-2] // PATCH, x.shape[-1] // PATCH
        stages = embeddings.backbone(x).feature_maps
        tokens = embeddings.projection(stages[-1]).flatten(2).transpose(1, 2)
        cls = embeddings.cls_token.expand(tokens.shape[0], -1, -1)
        positions = embeddings._resize_pos_embed(embeddings.position_embeddings, rows, cols)
        h = torch.cat([cls, tokens], 1) + positions
        features = [stages[0], stages[1]]
        for index, layer in enumerate(self.model.dpt.encoder.layer):
            h = layer(h)
            if index in self.hooks:
                features.append(h)
        return self.model.head(self.model.neck(features, rows, cols))


def build(state: dict[str, torch.Tensor]) -> MidasHybrid:
    return MidasHybrid(HybridSizes.of(state).config())


def _depth(
    image: np.ndarray, params: PreprocessParams, weights: Path
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The raw inverse depth (float32 [h, w]) of the padded image, and the padding's remover."""
    padded, remove_pad = resize_with_pad(image, params.resolution)
    net = network(build, weights, params.device)
    with torch.no_grad():
        depth = net(image_tensor(padded, 1 / 127.5, -1.0, net=net))[0]
    return depth.float().cpu().numpy(), remove_pad


def _spread(depth: np.ndarray) -> np.ndarray:
    """0..1 from the image's nearest (1) to its farthest (0)."""
    low = depth - depth.min()
    return low / max(float(low.max()), 1e-8)


def depth_midas_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """uint8 [H, W, 3] -> the depth map, uint8 [H, W] at the processor resolution."""
    depth, remove_pad = _depth(image, params, weights)
    return remove_pad((_spread(depth) * 255.0).clip(0, 255).astype(np.uint8))


def normal_midas_map(image: np.ndarray, params: PreprocessParams, weights: Path) -> np.ndarray:
    """uint8 [H, W, 3] -> the normal map, uint8 [H, W, 3]; threshold_a: the background threshold (0..1)."""
    depth, remove_pad = _depth(image, params, weights)
    x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    background = _spread(depth) < params.threshold_a
    x[background], y[background] = 0, 0
    normal = np.stack([x, y, np.full_like(x, _SLOPE_Z)], axis=2)
    normal /= np.sqrt((normal**2).sum(axis=2, keepdims=True))
    # the extension builds (x, y, z) and flips it as BGR -> RGB
    return remove_pad((normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)[:, :, ::-1].copy())
