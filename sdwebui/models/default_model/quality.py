"""Scoring generated images against the scenes their prompts describe (shared by trainer and benchmark)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image

from sdwebui.models.default_model import dataset
from sdwebui.models.default_model.attributes import read_attributes

ATTRIBUTES = ("background", "colour", "position", "shape", "size")

# generate(prompts, seeds, negative_prompts, cfg_scale) -> images
GenerateFn = Callable[[list[str], list[int], list[str] | None, float], list[Image.Image]]


def full_prompt(scene: dataset.Scene) -> str:
    return dataset.caption(scene, dataset.CaptionParts())


def score(images: Sequence[Image.Image], scenes: Sequence[dataset.Scene]) -> dict[str, float]:
    """Fraction of images whose attribute read from pixels matches the scene, per attribute."""
    hits = dict.fromkeys(ATTRIBUTES, 0)
    for image, scene in zip(images, scenes, strict=True):
        found = read_attributes(image)
        hits["background"] += found.background == scene.background
        hits["colour"] += found.colour == scene.main.colour
        hits["position"] += found.position == scene.main.position
        hits["shape"] += found.shape == scene.main.shape
        hits["size"] += found.size == scene.main.size
    return {k: v / max(1, len(scenes)) for k, v in hits.items()}


def evaluate_held_out(
    generate: GenerateFn, count: int, cfg_scale: float, seed: int = 0, batch: int = 50
) -> dict:
    """Accuracy over ``count`` held-out prompt x seed pairs (each scene's full caption, seed = seed + i)."""
    scenes = dataset.held_out_scenes(count)
    images: list[Image.Image] = []
    for start in range(0, count, batch):
        chunk = scenes[start : start + batch]
        seeds = [seed + start + i for i in range(len(chunk))]
        images += generate([full_prompt(s) for s in chunk], seeds, None, cfg_scale)
    return score(images, scenes)


def format_scores(scores: dict[str, float]) -> str:
    return " ".join(f"{k} {v * 100:.0f}%" for k, v in scores.items())
