"""Prompts from file or textbox: one generation per line; a line may set options A1111-style:
`--prompt "a cat" --negative_prompt "blurry" --steps 20 --seed 5 --sampler_name "Euler a"`.

Dogfood: written only against the public extension API. ui() argument order follows A1111's script.
"""

from __future__ import annotations

import copy
import random
import shlex

import gradio as gr

from modules import processing, scripts, shared
from modules.processing import Processed


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


PROMPT_TAGS = {
    "sd_model": str,
    "outpath_samples": str,
    "outpath_grids": str,
    "prompt_for_display": str,
    "prompt": str,
    "negative_prompt": str,
    "styles": _list,
    "seed": int,
    "subseed_strength": float,
    "subseed": int,
    "seed_resize_from_h": int,
    "seed_resize_from_w": int,
    "sampler_name": str,
    "scheduler": str,
    "batch_size": int,
    "n_iter": int,
    "steps": int,
    "cfg_scale": float,
    "width": int,
    "height": int,
    "restore_faces": _bool,
    "tiling": _bool,
    "do_not_save_samples": _bool,
    "do_not_save_grid": _bool,
}


def parse_line(line: str) -> dict:
    """A plain prompt, or `--tag value` pairs; unknown tags and bad values raise with the line quoted."""
    if not line.lstrip().startswith("--"):
        return {"prompt": line}
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise RuntimeError(f"Prompts from file: cannot parse line {line!r}: {exc}") from exc
    result, pos = {}, 0
    while pos < len(words):
        tag = words[pos]
        if not tag.startswith("--") or tag[2:] not in PROMPT_TAGS:
            raise RuntimeError(f"Prompts from file: unknown option {tag!r} in line {line!r}")
        if pos + 1 >= len(words):
            raise RuntimeError(f"Prompts from file: missing value for {tag} in line {line!r}")
        try:
            result[tag[2:]] = PROMPT_TAGS[tag[2:]](words[pos + 1])
        except ValueError as exc:
            raise RuntimeError(f"Prompts from file: bad value for {tag} in line {line!r}: {exc}") from exc
        pos += 2
    return result


def check_args(checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt) -> None:
    """The API's positional script_args: two checkboxes, "start"/"end", the prompt lines."""
    for label, value in (("Iterate seed every line", checkbox_iterate),
                         ("Use same random seed for all lines", checkbox_iterate_batch)):  # fmt: skip
        if not isinstance(value, bool):
            raise scripts.ScriptArgsError(f"Prompts from file: {label!r} must be true/false, got {value!r}")
    if prompt_position not in ("start", "end"):
        raise scripts.ScriptArgsError(
            f"Prompts from file: insert prompts at must be 'start' or 'end', got {prompt_position!r}"
        )
    if prompt_txt is not None and not isinstance(prompt_txt, str):
        raise scripts.ScriptArgsError(f"Prompts from file: the prompt list must be text, got {prompt_txt!r}")


class Script(scripts.Script):
    def title(self):
        return "Prompts from file or textbox"

    def ui(self, is_img2img):
        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False)
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False)
        prompt_position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start")
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=3)
        upload = gr.File(label="Upload prompt inputs", type="binary")
        upload.change(
            fn=lambda data: data.decode("utf8", errors="ignore") if data else gr.update(),
            inputs=[upload],
            outputs=[prompt_txt],
        )
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p, checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt):
        check_args(checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt)
        lines = [x.strip() for x in (prompt_txt or "").splitlines() if x.strip()]
        if not lines:
            raise scripts.ScriptArgsError("Prompts from file: the list of prompts is empty")
        try:  # a bad line is a bad argument: a 422 naming script_args, not a failed job
            jobs = [parse_line(line) for line in lines]
        except RuntimeError as exc:
            raise scripts.ScriptArgsError(str(exc)) from exc
        images = sum(job.get("n_iter", p.n_iter) * job.get("batch_size", p.batch_size) for job in jobs)
        if images > int(shared.opts.limit_images):  # all lines are one job: the setting bounds them together
            raise scripts.ScriptArgsError(
                f"Prompts from file: {len(jobs)} lines make {images} images, over the limit of "
                f"{shared.opts.limit_images} (limit_images)"
            )
        p.do_not_save_grid = True
        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = int(random.randrange(4294967294))
        shared.state.job_count = sum(job.get("n_iter", p.n_iter) for job in jobs)
        images, all_prompts, all_seeds, infotexts = [], [], [], []
        for job in jobs:
            if shared.state.interrupted:
                break
            copy_p = copy.copy(p)
            copy_p.override_settings = dict(p.override_settings)
            copy_p.extra_generation_params = dict(p.extra_generation_params)
            for key, value in job.items():
                if key == "sd_model":
                    copy_p.override_settings["sd_model_checkpoint"] = value
                else:
                    setattr(copy_p, key, value)
            for key in ("prompt", "negative_prompt"):
                if job.get(key) and getattr(p, key):
                    own, line = getattr(p, key), job[key]
                    setattr(copy_p, key, f"{line} {own}" if prompt_position == "start" else f"{own} {line}")
            proc = processing.process_images(copy_p)
            images += proc.images
            all_prompts += proc.all_prompts
            all_seeds += proc.all_seeds
            infotexts += proc.infotexts
            if checkbox_iterate:
                p.seed = p.seed + p.batch_size * p.n_iter
        return Processed(
            p, images, p.seed, "", all_prompts=all_prompts, all_seeds=all_seeds, infotexts=infotexts
        )
