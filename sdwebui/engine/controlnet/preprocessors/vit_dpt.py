"""DINOv2 ViT (patch 14, layer scale) and the DPT depth head of Depth Anything, in the key layout of its
checkpoints: `pretrained.{cls_token, pos_embed, patch_embed.proj, blocks.i.{norm1, attn.qkv, attn.proj, ls1,
norm2, mlp.fc1, mlp.fc2, ls2}, norm}` and `depth_head.{projects, resize_layers, scratch.*}`.
Sizes come from the file: width from cls_token, depth from the blocks, 64-wide heads (DINOv2's).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

PATCH = 14


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim * 4), nn.Linear(dim * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=1e-6), Mlp(dim), LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    def __init__(self, dim: int, depth: int, grid: int = 37):
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training only (masked tokens); in the file
        self.blocks = nn.ModuleList(Block(dim, max(1, dim // 64)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _positions(self, rows: int, cols: int) -> torch.Tensor:
        """The position embedding for a rows x cols grid: DINOv2's bicubic resize by (n + 0.1) / grid."""
        grid = int(math.sqrt(self.pos_embed.shape[1] - 1))
        if rows == cols == grid:
            return self.pos_embed
        patches = self.pos_embed[:, 1:].float().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        scale = ((rows + 0.1) / grid, (cols + 0.1) / grid)
        patches = F.interpolate(patches, scale_factor=scale, mode="bicubic", antialias=False)
        return torch.cat([self.pos_embed[:, :1], patches.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], 1)

    def intermediate(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """The normed patch tokens [B, N, C] after each block in `layers`."""
        rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        tokens = self.patch_embed(x)
        h = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], 1) + self._positions(
            rows, cols
        )
        outputs = []
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index in layers:
                outputs.append(self.norm(h)[:, 1:])
        return outputs


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        resize = {"size": size} if size is not None else {"scale_factor": 2}
        return self.out_conv(F.interpolate(x, **resize, mode="bilinear", align_corners=True))


class DPTHead(nn.Module):
    """Reassemble four token maps at 4x, 2x, 1x and 1/2x, fuse them top-down, regress a non-negative depth."""

    def __init__(self, dim: int, features: int, channels: list[int]):
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(dim, c, 1) for c in channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(channels[0], channels[0], 4, stride=4),
            nn.ConvTranspose2d(channels[1], channels[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(channels[3], channels[3], 3, stride=2, padding=1),
        ])  # fmt: skip
        self.scratch = nn.Module()
        for i, c in enumerate(channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
            setattr(self.scratch, f"refinenet{i}", FusionBlock(features))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(True), nn.Conv2d(32, 1, 1), nn.ReLU(True)
        )

    def forward(self, tokens: list[torch.Tensor], rows: int, cols: int) -> torch.Tensor:
        s = self.scratch
        maps = []
        for i, t in enumerate(tokens):
            grid = t.permute(0, 2, 1).reshape(t.shape[0], t.shape[-1], rows, cols)
            maps.append(getattr(s, f"layer{i + 1}_rn")(self.resize_layers[i](self.projects[i](grid))))
        path = s.refinenet4(maps[3], size=maps[2].shape[2:])
        path = s.refinenet3(path, maps[2], size=maps[1].shape[2:])
        path = s.refinenet2(path, maps[1], size=maps[0].shape[2:])
        path = s.refinenet1(path, maps[0])
        out = F.interpolate(
            s.output_conv1(path), (rows * PATCH, cols * PATCH), mode="bilinear", align_corners=True
        )
        return s.output_conv2(out)


class DepthAnything(nn.Module):
    """[B, 3, H, W] (H, W multiples of 14, ImageNet-normalised) -> relative inverse depth [B, H, W]."""

    def __init__(
        self, dim: int, depth: int, features: int, channels: list[int], grid: int = 37, version: int = 1
    ):
        super().__init__()
        self.pretrained = DinoV2(dim, depth, grid)
        self.depth_head = DPTHead(dim, features, channels)
        self.layers = feature_layers(depth, version)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        depth = self.depth_head(self.pretrained.intermediate(x, self.layers), rows, cols)
        return F.relu(F.interpolate(depth, x.shape[-2:], mode="bilinear", align_corners=True)).squeeze(1)


def feature_layers(depth: int, version: int) -> list[int]:
    """The blocks whose tokens the head reads: v1 the last four; v2 spread over the network (ViT-S/B
    2, 5, 8, 11; ViT-L 4, 11, 17, 23; ViT-G 9, 19, 29, 39)."""
    if version == 1:
        return list(range(depth - 4, depth))
    if depth == 24:
        return [4, 11, 17, 23]
    return [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]


def build(state: dict[str, torch.Tensor], version: int = 1) -> DepthAnything:
    dim = state["pretrained.cls_token"].shape[-1]
    depth = len({k.split(".")[2] for k in state if k.startswith("pretrained.blocks.")})
    channels = [state[f"depth_head.projects.{i}.weight"].shape[0] for i in range(4)]
    features = state["depth_head.scratch.layer1_rn.weight"].shape[0]
    grid = int(math.sqrt(state["pretrained.pos_embed"].shape[1] - 1))
    return DepthAnything(dim, depth, features, channels, grid, version)


def build_v2(state: dict[str, torch.Tensor]) -> DepthAnything:
    return build(state, version=2)
