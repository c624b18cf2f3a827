"""Procedural scenes for the embedded default model: coloured shapes on coloured backgrounds + captions.

Every scene is a pure function of ``(seed, index)``, so the data set is deterministic and unlimited.
Captions follow a small grammar: ``"a small red circle on the left, blue background"``; parts of it
(size, colour, position, background) are sometimes left out so that short prompts like "a red circle"
and prompts without a colour (for negative-prompt checks) are in the training distribution.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64

# Well separated in RGB so that a nearest-colour classifier reads them back without ambiguity.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, int] = {"small": 18, "large": 30}  # bounding-box side in pixels at 64x64
POSITIONS: dict[str, int] = {"left": 16, "center": 32, "right": 48}  # centre x at 64x64
POSITION_PHRASES: dict[str, str] = {"left": "on the left", "center": "in the center", "right": "on the right"}
JITTER = 3  # pixels of random offset around the nominal centre


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    shapes: tuple[ShapeSpec, ...]
    background: str
    offsets: tuple[tuple[int, int], ...]  # (dx, dy) jitter per shape

    @property
    def main(self) -> ShapeSpec:
        return self.shapes[0]


@dataclass(frozen=True)
class CaptionParts:
    """Which parts of the grammar a caption states; the rest is left unsaid."""

    size: bool = True
    colour: bool = True
    position: bool = True
    background: bool = True


def combo_is_held_out(shape: str, colour: str, background: str, position: str) -> bool:
    """About 1 in 10 single-shape combinations never appear in training; the benchmark uses them."""
    key = (
        SHAPES.index(shape),
        COLOURS.index(colour),
        COLOURS.index(background),
        list(POSITIONS).index(position),
    )
    return (key[0] * 7 + key[1] * 5 + key[2] * 3 + key[3] * 11) % 10 == 3


def shape_phrase(spec: ShapeSpec, parts: CaptionParts) -> str:
    words = []
    if parts.size:
        words.append(spec.size)
    if parts.colour:
        words.append(spec.colour)
    words.append(spec.shape)
    article = "an" if words[0][0] in "aeiou" else "a"
    phrase = f"{article} {' '.join(words)}"
    if parts.position:
        phrase += " " + POSITION_PHRASES[spec.position]
    return phrase


def caption(scene: Scene, parts: CaptionParts = CaptionParts(), only: int | None = None) -> str:
    """The scene's caption; ``only`` describes just that one of its shapes (captions need not be complete)."""
    specs = scene.shapes if only is None else (scene.shapes[only],)
    text = " and ".join(shape_phrase(spec, parts) for spec in specs)
    if parts.background:
        text += f", {scene.background} background"
    return text


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the scene at 4x and downsample, for anti-aliased edges like a real image."""
    supersample = 4
    scale = size / IMAGE_SIZE * supersample
    canvas = Image.new("RGB", (size * supersample, size * supersample), PALETTE[scene.background])
    draw = ImageDraw.Draw(canvas)
    for spec, (dx, dy) in zip(scene.shapes, scene.offsets, strict=True):
        cx = (POSITIONS[spec.position] + dx) * scale
        cy = (IMAGE_SIZE / 2 + dy) * scale
        half = SIZES[spec.size] / 2 * scale
        box = (cx - half, cy - half, cx + half, cy + half)
        fill = PALETTE[spec.colour]
        if spec.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif spec.shape == "square":
            draw.rectangle(box, fill=fill)
        elif spec.shape == "triangle":
            draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
        else:
            raise ValueError(f"unknown shape {spec.shape!r}; expected one of {SHAPES}")
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def random_scene(rng: random.Random, two_shape_fraction: float = 0.1, allow_held_out: bool = False) -> Scene:
    while True:
        background = rng.choice(COLOURS)
        if rng.random() < two_shape_fraction:
            positions = ("left", "right")
            specs = tuple(
                ShapeSpec(rng.choice(SHAPES), rng.choice([c for c in COLOURS if c != background]), "small", p)
                for p in positions
            )
        else:
            colour = rng.choice([c for c in COLOURS if c != background])
            specs = (
                ShapeSpec(rng.choice(SHAPES), colour, rng.choice(list(SIZES)), rng.choice(list(POSITIONS))),
            )
            s = specs[0]
            if not allow_held_out and combo_is_held_out(s.shape, s.colour, background, s.position):
                continue
        offsets = tuple((rng.randint(-JITTER, JITTER), rng.randint(-JITTER, JITTER)) for _ in specs)
        return Scene(shapes=specs, background=background, offsets=offsets)


def random_caption_parts(rng: random.Random) -> CaptionParts:
    return CaptionParts(
        size=rng.random() > 0.3,
        colour=rng.random() > 0.1,
        position=rng.random() > 0.2,
        background=rng.random() > 0.2,
    )


def sample(seed: int, index: int) -> tuple[Image.Image, str, Scene]:
    """Scene number ``index`` of the data set ``seed``: (image, caption, scene)."""
    rng = random.Random(seed * 1_000_003 + index)
    scene = random_scene(rng)
    return render(scene), caption(scene, random_caption_parts(rng)), scene


def iterate(seed: int, start: int = 0) -> Iterator[tuple[Image.Image, str, Scene]]:
    index = start
    while True:
        yield sample(seed, index)
        index += 1


def to_tensor_array(image: Image.Image) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [-1, 1], the VAE's input range."""
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0


def held_out_scenes(count: int, seed: int = 12345) -> list[Scene]:
    """Single-shape scenes whose (shape, colour, background, position) never occur in training."""
    rng = random.Random(seed)
    scenes: list[Scene] = []
    while len(scenes) < count:
        scene = random_scene(rng, two_shape_fraction=0.0, allow_held_out=True)
        s = scene.main
        if combo_is_held_out(s.shape, s.colour, scene.background, s.position):
            scenes.append(Scene(shapes=scene.shapes, background=scene.background, offsets=((0, 0),)))
    return scenes
