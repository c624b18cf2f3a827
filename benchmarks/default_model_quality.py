"""Quality benchmark of the embedded default model, measured from pixels.

    .venv/bin/python benchmarks/default_model_quality.py [--count 200] [--checkpoint PATH]

Prints, for held-out prompt x seed pairs (caption combinations never seen in training), the accuracy
per attribute at CFG 7 and CFG 1; the negative-prompt check (a prompt without a colour, with and
without the negative prompt "red"); and the inpainting check (repaint the right half of a scene with
"a green square": is the masked half green, is the rest unchanged). Images come from the engine
(`sdwebui.engine.generate`), with the web UI's defaults: Euler, 20 steps, the model's native size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdwebui.engine import default_model_runs as backends  # noqa: E402
from sdwebui.models.default_model import CHECKPOINT_PATH, dataset, quality  # noqa: E402
from sdwebui.models.default_model.attributes import colour_fraction, read_attributes  # noqa: E402


def accuracy_table(model, count: int, steps: int) -> dict[float, dict[str, float]]:
    def generate(prompts, seeds, negatives, cfg_scale):
        return backends.engine_txt2img(model, prompts, seeds, negatives, cfg_scale=cfg_scale, steps=steps)

    return {cfg: quality.evaluate_held_out(generate, count, cfg) for cfg in (7.0, 1.0)}


def negative_prompt_rates(model, count: int, steps: int) -> tuple[float, float]:
    """Share of images whose shape is red: prompt without a colour, without / with negative "red"."""
    scenes = dataset.held_out_scenes(count, seed=777)
    parts = dataset.CaptionParts(colour=False)
    prompts = [dataset.caption(s, parts) for s in scenes]
    seeds = [10_000 + i for i in range(count)]
    rates = []
    for negative in ("", "red"):
        images = backends.engine_txt2img(model, prompts, seeds, [negative] * count, steps=steps)
        rates.append(float(np.mean([read_attributes(im).colour == "red" for im in images])))
    return rates[0], rates[1]


def inpaint_rates(model, count: int, steps: int, prompt: str) -> tuple[float, float]:
    """(share with a green shape in the masked right half, share with the left half unchanged)."""
    size = model.native_resolution
    mask_array = np.zeros((size, size), dtype=bool)
    mask_array[:, size // 2 :] = True
    mask = Image.fromarray(mask_array.astype(np.uint8) * 255)
    scenes = [s for s in dataset.held_out_scenes(count * 4, seed=99) if s.main.position == "left"]
    scenes = [s for s in scenes if "green" not in (s.background, s.main.colour)][:count]
    green_ok = kept_ok = 0
    for i, scene in enumerate(scenes):
        original = dataset.render(scene, size)
        result = backends.engine_inpaint(model, original, mask, prompt, seed=20_000 + i, steps=steps)
        green_ok += colour_fraction(result, "green", mask_array) >= 0.05
        # Away from the seam (VAE receptive field), the unmasked half must come back as it was.
        left = np.asarray(result, dtype=np.float32)[:, : size // 2 - 4]
        kept_ok += np.abs(left - np.asarray(original, dtype=np.float32)[:, : size // 2 - 4]).mean() < 8.0
    return green_ok / len(scenes), kept_ok / len(scenes)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT_PATH)
    p.add_argument("--count", type=int, default=200, help="held-out prompt x seed pairs per CFG scale")
    p.add_argument("--checks", type=int, default=100, help="images for the negative and inpainting checks")
    p.add_argument("--steps", type=int, default=backends.DEFAULT_STEPS)
    p.add_argument("--inpaint-prompt", default="a green square")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    started = time.time()
    model = backends.load(a.checkpoint)
    print(f"default model {a.checkpoint.name}: Euler, {a.steps} steps, {model.native_resolution}px")

    table = accuracy_table(model, a.count, a.steps)
    print(f"\n| attribute ({a.count} held-out prompt x seed pairs) | CFG 7 | CFG 1 |")
    print("|---|---|---|")
    for name in quality.ATTRIBUTES:
        print(f"| {name} | {table[7.0][name] * 100:.1f}% | {table[1.0][name] * 100:.1f}% |")

    without, with_negative = negative_prompt_rates(model, a.checks, a.steps)
    print(
        f'\nnegative prompt: red shapes {without * 100:.1f}% without, {with_negative * 100:.1f}% with "red"'
    )

    try:
        green, kept = inpaint_rates(model, a.checks // 2, a.steps, a.inpaint_prompt)
        print(
            f"inpainting right half with {a.inpaint_prompt!r}: green {green * 100:.1f}%, rest unchanged {kept * 100:.1f}%"
        )
    except (ImportError, NotImplementedError) as error:
        print(f"inpainting: pending, the engine has no img2img yet ({error})")
    print(f"\n({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
