"""A1111's "Loopback" (img2img): each loop's output is the next loop's init image, the denoising strength
moving from the slider's value to "Final denoising strength" along a curve.

Dogfood: written only against the public extension API. Arguments as A1111's script: `[loops,
final_denoising_strength, denoising_curve, append_interrogation]`; A1111's older `[loops,
denoising_strength_change_factor(, append_interrogation)]` (each loop multiplies the strength by the
factor, kept in 0.1..1) is accepted too, as API clients written for it send (told apart by the third
argument: an interrogation choice, not a curve; the API pads missing arguments with the UI's defaults).
"""

from __future__ import annotations

import math

import gradio as gr

from modules import images, processing, scripts, shared
from modules.processing import Processed

CURVES = ("Aggressive", "Linear", "Lazy")
INTERROGATIONS = ("None", "CLIP", "DeepBooru")


def strength_schedule(args: tuple, initial: float):
    """(loop index -> denoising strength for loop index) and the infotext keys, for either argument form."""
    if len(args) >= 3 and args[2] in INTERROGATIONS:  # A1111's older 3 arguments (the rest: UI defaults)
        args = args[:3]
    if len(args) == 4:
        loops, final, curve, interrogation = args
        if curve not in CURVES:
            raise scripts.ScriptArgsError(
                f"Loopback: denoising curve must be one of {list(CURVES)}, got {curve!r}"
            )
        _check_number("final denoising strength", final, 0, 1)
    elif len(args) in (2, 3):
        loops, factor, *rest = args
        interrogation = rest[0] if rest else "None"
        _check_number("denoising strength change factor", factor, 0.5, 2)
    else:
        raise scripts.ScriptArgsError(f"Loopback: expected 4 arguments (loops, final strength, curve, interrogation), got {len(args)}")  # fmt: skip
    if (
        isinstance(loops, bool)
        or not isinstance(loops, (int, float))
        or not 1 <= loops <= 32
        or loops != int(loops)
    ):
        raise scripts.ScriptArgsError(f"Loopback: loops must be a whole number 1..32, got {loops!r}")
    if interrogation not in (None, "None"):
        raise scripts.ScriptArgsError(
            f"Loopback: prompt interrogation {interrogation!r} is not available; use 'None'"
        )
    loops = int(loops)
    if len(args) != 4:
        return (
            loops,
            lambda i: min(max(initial * factor**i, 0.1), 1.0),
            {"Denoising strength change factor": factor},
        )

    def strength(i: int) -> float:
        if loops == 1:
            return initial
        progress = i / (loops - 1)
        shaped = {
            "Aggressive": math.sin(progress * math.pi * 0.5),
            "Lazy": 1 - math.cos(progress * math.pi * 0.5),
        }
        return initial + (final - initial) * shaped.get(curve, progress)

    return loops, strength, {"Final denoising strength": final, "Denoising curve": curve}


def _check_number(label, value, lo, hi) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise scripts.ScriptArgsError(f"Loopback: {label} must be between {lo} and {hi}, got {value!r}")


class Script(scripts.Script):
    def title(self):
        return "Loopback"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        loops = gr.Slider(
            minimum=1, maximum=32, step=1, label="Loops", value=4, elem_id=self.elem_id("loops")
        )
        final = gr.Slider(minimum=0, maximum=1, step=0.01, label="Final denoising strength", value=0.5,
                          elem_id=self.elem_id("final_denoising_strength"))  # fmt: skip
        curve = gr.Dropdown(label="Denoising strength curve", choices=list(CURVES), value="Linear")
        interrogation = gr.Dropdown(
            label="Append interrogated prompt at each iteration", choices=["None"], value="None"
        )
        return [loops, final, curve, interrogation]

    def run(self, p, *args):
        if not p.init_images:
            raise scripts.ScriptArgsError("Loopback: needs an init image")
        initial = float(p.denoising_strength)
        loops, strength, params = strength_schedule(args, initial)
        processing.fix_seed(p)
        batch_count = p.n_iter
        p.extra_generation_params = {**p.extra_generation_params, **params}
        p.batch_size, p.n_iter, p.do_not_save_grid = 1, 1, True
        original_init, original_fill = p.init_images, p.inpainting_fill
        shared.state.job_count = loops * batch_count
        history, all_images, initial_seed, initial_info = [], [], None, None
        for _n in range(batch_count):
            p.init_images, p.denoising_strength = original_init, initial
            last_image = None
            for i in range(loops):
                processed = processing.process_images(p)
                if shared.state.interrupted or not processed.images:
                    break
                if initial_seed is None:
                    initial_seed, initial_info = processed.seed, processed.info
                p.seed = processed.seed + 1
                p.denoising_strength = strength(i + 1)
                last_image = processed.images[0]
                p.init_images, p.inpainting_fill = [last_image], 1  # later loops keep the "original" content
                if batch_count == 1:
                    history.append(last_image)
                    all_images.append(last_image)
            if batch_count > 1 and last_image is not None and not shared.state.interrupted:
                history.append(last_image)
                all_images.append(last_image)
            p.inpainting_fill = original_fill
            if shared.state.interrupted:
                break
        if len(history) > 1 and getattr(shared.opts, "return_grid", True):
            all_images = [images.image_grid(history, rows=1), *all_images]
        return Processed(p, all_images, initial_seed if initial_seed is not None else p.seed, initial_info or "",
                         infotexts=[initial_info or ""] * len(all_images))  # fmt: skip
