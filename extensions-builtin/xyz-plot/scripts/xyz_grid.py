"""X/Y/Z plot: one image per combination of axis values, assembled into a labelled grid.

Dogfood: written only against the public extension API (modules.scripts, processing, images, shared,
sd_samplers). Argument order of ui() follows A1111's X/Y/Z plot so API clients can send the same
`script_args`. Axis types may be an index into the tab's axis list, which keeps A1111 1.10's order (axes this
engine cannot honour stay in place and raise an error naming them when used), or the axis label.
Value syntax: comma-separated (CSV quoting allowed); integer ranges `1-5`, `1-5 (+2)`, `10-1 (-3)`, and
`1-10 [5]` (5 evenly spaced values); the same for floats (`1.0-2.0 (+0.5)`, `1-2 [3]`).
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from modules import images, processing, scripts, sd_samplers, shared
from modules.processing import Processed

RE_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RE_RANGE_FLOAT = re.compile(
    r"\s*([+-]?\s*\d+(?:\.\d*)?)\s*-\s*([+-]?\s*\d+(?:\.\d*)?)(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*"
)
RE_RANGE_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*\])?\s*")
RE_RANGE_COUNT_FLOAT = re.compile(
    r"\s*([+-]?\s*\d+(?:\.\d*)?)\s*-\s*([+-]?\s*\d+(?:\.\d*)?)(?:\s*\[(\d+(?:\.\d*)?)\s*\])?\s*"
)


def apply_field(name: str) -> Callable:
    def apply(p, x, xs):
        setattr(p, name, x)

    return apply


def apply_override(key: str) -> Callable:
    def apply(p, x, xs):
        p.override_settings[key] = x

    return apply


def apply_prompt(p, x, xs):
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise RuntimeError(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def str_permutations(x):
    """Marks the Prompt order axis: its values become every ordering of the given tokens."""
    return x


def apply_order(p, x, xs):
    """Put the tokens `x` into the prompt in this order, at the places where they first appear."""
    missing = [token for token in x if token not in p.prompt]
    if missing:
        raise RuntimeError(f"Prompt order did not find {', '.join(missing)} in the prompt.")
    positions = sorted((p.prompt.find(token), token) for token in x)
    parts, rest = [], p.prompt
    for _, token in positions:
        n = rest.find(token)
        parts.append(rest[:n])
        rest = rest[n + len(token) :]
    p.prompt = "".join(part + token for part, token in zip(parts, x, strict=True)) + rest


def apply_sampler(p, x, xs):
    config = sd_samplers.find_sampler_config(x)
    if config is None:
        raise RuntimeError(f"Unknown sampler: {x}")
    p.sampler_name = config.name


def confirm_samplers(p, xs):
    for x in xs:
        if sd_samplers.find_sampler_config(x) is None:
            raise RuntimeError(f"Unknown sampler: {x}")


def apply_schedule_type(p, x, xs):
    p.scheduler = sd_samplers.find_scheduler_label(x) or x


def confirm_schedule_types(p, xs):
    for x in xs:
        if sd_samplers.find_scheduler_label(x) is None:
            valid = ", ".join(sd_samplers.visible_scheduler_labels())
            raise RuntimeError(f"Unknown schedule type: {x}; valid: {valid}")


def apply_checkpoint(p, x, xs):
    p.override_settings["sd_model_checkpoint"] = x


def confirm_checkpoints(p, xs):
    known = shared.list_checkpoint_titles()
    for x in xs:
        if known and not any(
            x in (t, t.split(" [")[0], os.path.splitext(t.split(" [")[0])[0]) for t in known
        ):
            raise RuntimeError(f"Unknown checkpoint: {x}")


def style_names() -> list[str]:
    styles = shared.prompt_styles
    return list(styles.names()) if styles is not None else []


def apply_styles(p, x, xs):
    p.styles.extend(s.strip() for s in x.split(",") if s.strip())


def confirm_styles(p, xs):
    known = set(style_names())
    for x in xs:
        for name in (s.strip() for s in x.split(",")):
            if name and name not in known:
                raise RuntimeError(f"Unknown style: {name}")


def confirm_rng_source(p, xs):
    for x in xs:
        if x.strip().upper() != "CPU":
            raise RuntimeError(f"RNG source {x!r} is not available: noise is always drawn on the CPU")


def apply_size(p, x, xs):
    width, sep, height = x.lower().partition("x")
    try:
        p.width, p.height = int(width.strip()), int(height.strip())
    except ValueError:
        raise RuntimeError(f"X/Y/Z plot: bad Size {x!r}, expected WIDTHxHEIGHT such as 512x768") from None


def format_value_add_label(p, opt, x):
    if isinstance(x, float):
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    return x if isinstance(x, str) else str(x)


def format_value_join_list(p, opt, x):
    return ", ".join(x)


def format_remove_path(p, opt, x):
    return os.path.basename(x)


def do_nothing(p, x, xs):
    pass


def format_nothing(p, opt, x):
    return ""


def refuse(p, x, xs):
    raise RuntimeError("X/Y/Z plot: this axis is not available")  # never reached: run() checks first


@dataclass
class AxisOption:
    """An axis. `tab`: None = both tabs, else "txt2img"/"img2img" (A1111's AxisOptionTxt2Img/Img2Img).

    `unavailable` (all tabs) / `unavailable_txt2img`: why this build cannot honour the axis; such axes keep
    their place so A1111's indices stay valid, and using one is an error naming it.
    """

    label: str
    type: Callable[[str], Any]
    apply: Callable
    format_value: Callable = format_value_add_label
    confirm: Callable | None = None
    cost: float = 0.0  # A1111's (the order it sorts axes by to reload models less): kept, not used
    choices: Callable[[], list[str]] | None = None
    prepare: Callable | None = None  # A1111's: kept, not used
    tab: str | None = None
    unavailable: str = ""
    unavailable_txt2img: str = ""

    def why_unavailable(self, is_img2img: bool) -> str:
        return self.unavailable or ("" if is_img2img else self.unavailable_txt2img)


def sampler_axis(tab: str) -> AxisOption:
    """A1111 lists the Sampler axis twice (one row per tab) and indexes axes by position."""
    return AxisOption(
        "Sampler",
        str,
        apply_sampler,
        format_value=format_value,
        confirm=confirm_samplers,
        choices=sd_samplers.visible_sampler_names,
        tab=tab,
    )


def missing(label: str, reason: str, type_: Callable = str, tab: str | None = None) -> AxisOption:
    return AxisOption(label, type_, refuse, tab=tab, unavailable=reason)


NO_HIRES = "hires fix is not implemented"
NO_OPTION = "this engine has no such setting"
T2I, I2I = "txt2img", "img2img"

# A1111 1.10's axis_options, in its order (the API sends indices into this list filtered by tab), then ours.
AXES = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    missing("Hires steps", NO_HIRES, int, tab=T2I),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    missing("Image CFG Scale", "instruct-pix2pix models are not supported", float, tab=I2I),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list),
    sampler_axis(T2I),
    missing("Hires sampler", NO_HIRES, tab=T2I),
    sampler_axis(I2I),
    AxisOption(
        "Checkpoint name",
        str,
        apply_checkpoint,
        format_value=format_remove_path,
        confirm=confirm_checkpoints,
        choices=shared.list_checkpoint_titles,
    ),  # fmt: skip
    missing("Negative Guidance minimum sigma", NO_OPTION, float),
    missing("Sigma Churn", "the diffusers schedulers have no churn", float),
    missing("Sigma min", "the diffusers schedulers have no churn", float),
    missing("Sigma max", "the diffusers schedulers have no churn", float),
    missing("Sigma noise", "the diffusers schedulers only support 1.0", float),
    AxisOption(
        "Schedule type",
        str,
        apply_schedule_type,
        format_value=format_value,
        confirm=confirm_schedule_types,
        choices=sd_samplers.visible_scheduler_labels,
    ),  # fmt: skip
    missing("Schedule min sigma", NO_OPTION, float),
    missing("Schedule max sigma", NO_OPTION, float),
    missing("Schedule rho", NO_OPTION, float),
    missing("Skip Early CFG", NO_OPTION, float),
    missing("Beta schedule alpha", NO_OPTION, float),
    missing("Beta schedule beta", NO_OPTION, float),
    AxisOption("Eta", float, apply_field("eta")),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    AxisOption(
        "Denoising",
        float,
        apply_field("denoising_strength"),
        unavailable_txt2img=f"on txt2img it only affects hires fix, and {NO_HIRES}",
    ),  # fmt: skip
    AxisOption(
        "Initial noise multiplier",
        float,
        apply_field("initial_noise_multiplier"),
        unavailable_txt2img="txt2img has no initial image to add noise to",
    ),  # fmt: skip
    missing("Extra noise", NO_OPTION, float),
    missing("Hires upscaler", NO_HIRES, tab=T2I),
    AxisOption("Cond. Image Mask Weight", float, apply_override("inpainting_mask_weight"), tab=I2I),
    missing("VAE", "switching the VAE per job is not implemented"),
    AxisOption(
        "Styles", str, apply_styles, format_value=format_value, confirm=confirm_styles, choices=style_names
    ),
    missing("UniPC Order", NO_OPTION, int),
    missing("Face restore", "face restoration is not implemented"),
    missing("Token merging ratio", "token merging is not implemented", float),
    missing("Token merging ratio high-res", "token merging is not implemented", float),
    missing("Always discard next-to-last sigma", NO_OPTION),
    missing("SGM noise multiplier", NO_OPTION),
    missing("Refiner checkpoint", "the SDXL refiner is not implemented"),
    missing("Refiner switch at", "the SDXL refiner is not implemented", float),
    AxisOption(
        "RNG source",
        str,
        do_nothing,
        format_value=format_value,
        confirm=confirm_rng_source,
        choices=lambda: ["CPU"],
    ),  # fmt: skip
    missing("FP8 mode", "fp8 weight storage is not implemented"),
    AxisOption("Size", str, apply_size, format_value=format_value),
    # ours, after A1111's list so its indices stay valid
    AxisOption("Width", int, apply_field("width")),
    AxisOption("Height", int, apply_field("height")),
    AxisOption("Distilled CFG Scale", float, apply_field("distilled_cfg_scale")),  # Forge's, for Flux dev
]

axis_options = (
    AXES  # A1111's name: extensions append their own axes (found by this module's name, xyz_grid.py)
)


def axes_for_tab(is_img2img: bool) -> list[AxisOption]:
    """The axes of one tab, in the order A1111's API indices count them."""
    tab = I2I if is_img2img else T2I
    return [a for a in AXES if a.tab in (None, tab)]


def find_axis(value: Any, is_img2img: bool = False) -> AxisOption:
    """An axis by index into the tab's list (as A1111's API sends it) or by label (case-insensitive)."""
    axes = axes_for_tab(is_img2img)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(axes):
            raise RuntimeError(f"X/Y/Z plot: axis type index {value} out of range 0..{len(axes) - 1}")
        return axes[value]
    wanted = str(value or "Nothing").strip().lower()
    for axis in axes:
        if axis.label.lower() == wanted:
            return axis
    tab = I2I if is_img2img else T2I
    if any(a.label.lower() == wanted for a in AXES):
        raise RuntimeError(f"X/Y/Z plot: the {value} axis is not available on the {tab} tab")
    raise RuntimeError(f"X/Y/Z plot: unknown axis type {value!r}; valid: {', '.join(a.label for a in axes)}")


def check_available(axis: AxisOption, is_img2img: bool) -> None:
    reason = axis.why_unavailable(is_img2img)
    if reason:
        raise RuntimeError(f"X/Y/Z plot: the {axis.label} axis is not available: {reason}")


def csv_values(text: str) -> list[str]:
    if not text or not text.strip():
        return []
    return [x.strip() for x in next(csv.reader(io.StringIO(text), skipinitialspace=True)) if x.strip()]


def expand_values(axis: AxisOption, text: str) -> list[Any]:
    """Parse an axis' values, expanding range syntax for int and float axes."""
    raw = csv_values(text)
    if axis.type is str_permutations:
        return [list(order) for order in itertools.permutations(raw)]
    out: list[Any] = []
    for val in raw:
        if axis.type is int:
            m, mc = RE_RANGE.fullmatch(val), RE_RANGE_COUNT.fullmatch(val)
            if m is not None:
                start, end = int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", ""))
                step = int(m.group(3)) if m.group(3) is not None else 1
                if step == 0:
                    raise RuntimeError(f"X/Y/Z plot: step of {val!r} must not be 0")
                out += list(range(start, end + (1 if step > 0 else -1), step))
                continue
            if mc is not None and mc.group(3) is not None:
                start, end, num = (
                    int(mc.group(1).replace(" ", "")),
                    int(mc.group(2).replace(" ", "")),
                    int(mc.group(3)),
                )
                out += [int(x) for x in np.linspace(start, end, num).tolist()]
                continue
        elif axis.type is float:
            m, mc = RE_RANGE_FLOAT.fullmatch(val), RE_RANGE_COUNT_FLOAT.fullmatch(val)
            if m is not None:
                start, end = float(m.group(1).replace(" ", "")), float(m.group(2).replace(" ", ""))
                step = float(m.group(3)) if m.group(3) is not None else 1.0
                if step == 0:
                    raise RuntimeError(f"X/Y/Z plot: step of {val!r} must not be 0")
                out += [round(v, 8) for v in np.arange(start, end + step / 2, step).tolist()]
                continue
            if mc is not None and mc.group(3) is not None:
                start, end = float(mc.group(1).replace(" ", "")), float(mc.group(2).replace(" ", ""))
                out += [round(v, 8) for v in np.linspace(start, end, int(float(mc.group(3)))).tolist()]
                continue
        out.append(val)
    try:
        return [axis.type(x) for x in out]
    except ValueError as exc:
        raise RuntimeError(f"X/Y/Z plot: bad value for {axis.label}: {exc}") from exc


def parse_axis(p, kind, text, chosen, csv_mode, is_img2img) -> tuple[AxisOption, list[Any]]:
    axis = find_axis(kind, is_img2img)
    check_available(axis, is_img2img)
    if axis.choices is not None and not csv_mode and chosen:
        text = ",".join(f'"{c}"' for c in chosen)
    values = expand_values(axis, text) if axis.label != "Nothing" else [""]
    if axis.label != "Nothing" and not values:
        raise RuntimeError(f"X/Y/Z plot: no values given for the {axis.label} axis")
    if axis.confirm is not None:
        axis.confirm(p, values)
    return axis, values


def check_arg_types(texts, dropdowns, flags, margin_size) -> None:
    """The API's positional script_args, checked by kind (a value in the wrong slot names its type)."""
    if any(text is not None and not isinstance(text, str) for text in texts):
        raise scripts.ScriptArgsError(f"X/Y/Z plot: axis values must be text, got {texts!r}")
    if any(chosen is not None and not isinstance(chosen, list) for chosen in dropdowns):
        raise scripts.ScriptArgsError(f"X/Y/Z plot: axis value dropdowns must be lists, got {dropdowns!r}")
    if any(not isinstance(flag, bool) for flag in flags):
        raise scripts.ScriptArgsError(f"X/Y/Z plot: the checkboxes must be true/false, got {flags!r}")
    if (
        isinstance(margin_size, bool)
        or not isinstance(margin_size, (int, float))
        or not 0 <= margin_size <= 500
    ):
        raise scripts.ScriptArgsError(f"X/Y/Z plot: grid margins must be 0..500 px, got {margin_size!r}")


def select_axis(kind, csv_mode, is_img2img=False):
    """Show the values dropdown for axes with choices (samplers, checkpoints) unless text is wanted."""
    axis = find_axis(kind if kind is not None else 0, is_img2img)
    use_dropdown = axis.choices is not None and not csv_mode
    choices = axis.choices() if use_dropdown else []
    return gr.update(visible=not use_dropdown), gr.update(visible=use_dropdown, choices=choices, value=[])


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        # the UI lists only the axes this build honours, by label; the API may also send A1111's indices
        labels = [a.label for a in axes_for_tab(is_img2img) if not a.why_unavailable(is_img2img)]
        with gr.Row():
            x_type = gr.Dropdown(label="X type", choices=labels, value="Seed", type="value")
            x_values = gr.Textbox(label="X values", lines=1)
            x_values_dropdown = gr.Dropdown(label="X values", visible=False, multiselect=True, choices=[])
        with gr.Row():
            y_type = gr.Dropdown(label="Y type", choices=labels, value="Nothing", type="value")
            y_values = gr.Textbox(label="Y values", lines=1)
            y_values_dropdown = gr.Dropdown(label="Y values", visible=False, multiselect=True, choices=[])
        with gr.Row():
            z_type = gr.Dropdown(label="Z type", choices=labels, value="Nothing", type="value")
            z_values = gr.Textbox(label="Z values", lines=1)
            z_values_dropdown = gr.Dropdown(label="Z values", visible=False, multiselect=True, choices=[])
        with gr.Row():
            draw_legend = gr.Checkbox(label="Draw legend", value=True)
            include_lone_images = gr.Checkbox(label="Include Sub Images", value=False)
            include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False)
            no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False)
            vary_seeds_x = gr.Checkbox(label="Vary seeds for X", value=False)
            vary_seeds_y = gr.Checkbox(label="Vary seeds for Y", value=False)
            vary_seeds_z = gr.Checkbox(label="Vary seeds for Z", value=False)
            margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2)
            csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False)
        for kind, text, dropdown in ((x_type, x_values, x_values_dropdown), (y_type, y_values, y_values_dropdown),
                                     (z_type, z_values, z_values_dropdown)):  # fmt: skip
            select = functools.partial(select_axis, is_img2img=is_img2img)
            kind.change(select, inputs=[kind, csv_mode], outputs=[text, dropdown])
            csv_mode.change(select, inputs=[kind, csv_mode], outputs=[text, dropdown])
        return [
            x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown,
            z_type, z_values, z_values_dropdown, draw_legend, include_lone_images, include_sub_grids,
            no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode,
        ]  # fmt: skip

    def run(self, p, x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
            z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x,
            vary_seeds_y, vary_seeds_z, margin_size, csv_mode):  # fmt: skip
        check_arg_types(
            (x_values, y_values, z_values), (x_values_dropdown, y_values_dropdown, z_values_dropdown),
            (draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x, vary_seeds_y,
             vary_seeds_z, csv_mode), margin_size,
        )  # fmt: skip
        if not no_fixed_seeds:
            processing.fix_seed(p)
        try:  # every error here is about the arguments: a 422 naming script_args, not a failed job
            axes = [
                parse_axis(p, kind, text, chosen, csv_mode, self.is_img2img)
                for kind, text, chosen in ((x_type, x_values, x_values_dropdown),
                                           (y_type, y_values, y_values_dropdown),
                                           (z_type, z_values, z_values_dropdown))
            ]  # fmt: skip
        except (RuntimeError, TypeError, ValueError) as exc:
            raise scripts.ScriptArgsError(str(exc)) from exc
        (xa, xs), (ya, ys), (za, zs) = axes
        images = len(xs) * len(ys) * len(zs) * p.n_iter * p.batch_size
        if images > int(shared.opts.limit_images):  # the grid is one job: the setting bounds it as a whole
            raise scripts.ScriptArgsError(
                f"X/Y/Z plot: {len(xs)}x{len(ys)}x{len(zs)} cells make {images} images, over the limit of "
                f"{shared.opts.limit_images} (limit_images)"
            )
        varies = (vary_seeds_x, vary_seeds_y, vary_seeds_z)
        shared.state.job_count = len(xs) * len(ys) * len(zs) * p.n_iter
        cells: list[list[list[Processed]]] = []
        infotexts = []
        for iz, z in enumerate(zs):
            plane = []
            for iy, y in enumerate(ys):
                row = []
                for ix, x in enumerate(xs):
                    if shared.state.interrupted:
                        break
                    pc = copy.copy(p)
                    pc.override_settings = dict(p.override_settings)
                    pc.extra_generation_params = dict(p.extra_generation_params)
                    pc.styles = list(p.styles)
                    for (axis, values), value, vary, index in zip(
                        axes, (x, y, z), varies, (ix, iy, iz), strict=True
                    ):
                        axis.apply(pc, value, values)
                        if vary and isinstance(pc.seed, int) and pc.seed >= 0:
                            pc.seed += index
                    processed = processing.process_images(pc)
                    row.append(processed)
                    infotexts.append(processed.infotexts[0] if processed.infotexts else processed.info)
                plane.append(row)
            cells.append(plane)
        return self._assemble(p, axes, cells, infotexts, draw_legend, include_lone_images, include_sub_grids,
                              int(margin_size or 0))  # fmt: skip

    def _assemble(self, p, axes, cells, infotexts, draw_legend, include_lone, include_sub_grids, margin):
        (xa, xs), (ya, ys), (za, zs) = axes
        done = [proc for plane in cells for row in plane for proc in row]
        if not done or not done[0].images:
            return Processed(p, [])
        first = done[0]

        def cell_image(proc):
            imgs = proc.images
            return imgs[0] if len(imgs) == 1 else images.image_grid(imgs)

        w, h = cell_image(first).size
        subgrids = []
        for plane in cells:
            flat = [cell_image(proc) for row in plane for proc in row]
            if len(flat) < len(xs) * len(ys):  # interrupted: pad with blanks so the grid keeps its shape
                flat += [flat[0].copy().point(lambda _: 0)] * (len(xs) * len(ys) - len(flat))
            grid = images.image_grid(flat, rows=len(ys))
            if draw_legend:
                hor = [[images.GridAnnotation(xa.format_value(p, xa, x))] for x in xs]
                ver = [[images.GridAnnotation(ya.format_value(p, ya, y))] for y in ys]
                grid = images.draw_grid_annotations(grid, w, h, hor, ver, margin)
            subgrids.append(grid)
        if len(zs) > 1:
            sw, sh = subgrids[0].size
            main = images.image_grid(subgrids, rows=1)
            if draw_legend:
                hor = [[images.GridAnnotation(za.format_value(p, za, z))] for z in zs]
                main = images.draw_grid_annotations(main, sw, sh, hor, [[]], margin)
        else:
            main = subgrids[0]
        result_images = [main]
        result_infos = [first.info]
        if include_sub_grids and len(zs) > 1:
            result_images += subgrids
            result_infos += [first.info] * len(subgrids)
        if include_lone:
            for proc in done:
                result_images += proc.images
                result_infos += proc.infotexts[: len(proc.images)]
        out = Processed(
            p,
            result_images,
            seed=first.seed,
            info=first.info,
            all_prompts=[proc.all_prompts[0] for proc in done],
            all_seeds=[proc.all_seeds[0] for proc in done],
            infotexts=result_infos,
            index_of_first_image=1,
        )
        out.xyz_cells = len(done)  # handy for callers and tests
        out.xyz_labels = [[axis.format_value(p, axis, v) for v in values] for axis, values in axes]
        if not p.do_not_save_grid and p.outpath_grids:
            images.save_image(
                main, p.outpath_grids, "xyz_grid", seed=first.seed, info=first.info, grid=True, p=p
            )
        return out
