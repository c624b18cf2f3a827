"""The generation parameters shared by txt2img and img2img (sampler, steps, size, CFG, seed, batch).

`ParamControls` keeps the components by name so handlers read values by name, not by position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from sdwebui.models.families import FamilyDefaults
from webui.ui_config import UiConfig


@dataclass
class ParamControls:
    sampler_name: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    width: gr.Slider
    height: gr.Slider
    batch_count: gr.Slider
    batch_size: gr.Slider
    cfg_scale: gr.Slider
    distilled_cfg_scale: gr.Slider  # Forge's "Distilled CFG Scale": shown for Flux dev only
    seed: gr.Number
    subseed: gr.Number
    subseed_strength: gr.Slider
    seed_resize_from_w: gr.Slider
    seed_resize_from_h: gr.Slider
    reuse_seed_button: gr.Button  # wired by the tab, which knows the last result

    def components(self) -> list[gr.components.Component]:
        return [getattr(self, f.name) for f in fields(self) if f.name not in _NOT_INPUTS]

    def request_fields(self, values: dict) -> dict[str, Any]:
        """`RawFields` keyword arguments (A1111 names) from a Gradio inputs dict. What comes from the
        settings (Clip skip, eta, ENSD...) is added by the resolution (sdwebui.config.resolve), not here."""
        return {
            "sampler_name": values[self.sampler_name],
            "scheduler": values[self.scheduler],
            "steps": int(values[self.steps]),
            "width": int(values[self.width]),
            "height": int(values[self.height]),
            "n_iter": int(values[self.batch_count]),
            "batch_size": int(values[self.batch_size]),
            "cfg_scale": float(values[self.cfg_scale]),
            "distilled_cfg_scale": _optional_float(values.get(self.distilled_cfg_scale)),
            "seed": _seed(values[self.seed], "seed"),
            "subseed": _seed(values[self.subseed], "subseed"),
            "subseed_strength": float(values[self.subseed_strength]),
            "seed_resize_from_w": int(values[self.seed_resize_from_w]),
            "seed_resize_from_h": int(values[self.seed_resize_from_h]),
        }


_NOT_INPUTS = ("reuse_seed_button",)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)  # None: the model family's default


def _seed(value: Any, name: str) -> int:
    if value is None or value == "":
        return -1
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise gr.Error(f"{name}: must be a whole number, got {value!r}") from exc
    if not number.is_integer():
        raise gr.Error(f"{name}: must be a whole number, got {value!r}")
    return int(number)


def build_params_for(tab: str, cfg: UiConfig, backend: Any) -> ParamControls:
    """The parameter block with the backend's samplers, schedule types, default sampler and model size."""
    return build_params(
        tab,
        cfg,
        backend.samplers(),
        backend.schedulers(),
        # a flow family (Flux, SD3) starts on its own sampler; SD ones on the "Default sampler" setting
        lambda: backend.family_defaults().sampler_name or backend.options.get("default_sampler", ""),
        native_size=backend.native_resolution(),
        default_scheduler=lambda: backend.options.get("default_scheduler", ""),
        family=backend.family_defaults(),
    )


def _initial_sampler(default_sampler: str | Callable[[], str], samplers: list[str]) -> Callable[[], Any]:
    """The dropdown's value, computed on every page load: the "Default sampler" (or "Default schedule
    type") setting as it is now."""

    def value() -> Any:
        wanted = default_sampler() if callable(default_sampler) else default_sampler
        return wanted if wanted in samplers else (samplers[0] if samplers else None)

    return value


def build_params(
    tab: str,
    cfg: UiConfig,
    samplers: list[str],
    schedulers: list[str],
    default_sampler: str | Callable[[], str],
    show_size: bool = True,
    native_size: int = 512,
    default_scheduler: str | Callable[[], str] = "",
    family: FamilyDefaults | None = None,
) -> ParamControls:
    """Lay out the parameter block; returns the components by name. Width/height default to the model's
    `native_size` unless ui-config.json has a value (the default is not written there: it follows the model).
    The sampler follows the "Default sampler" setting (`default_sampler`, a callable is asked on every page
    load); ui-config.json does not hold it, so a value written there by an older version is dropped. The
    schedule type follows "Default schedule type" the same way. `family`: the model's defaults, for whether
    the Distilled CFG Scale slider shows (`family_values` sets the rest when the model changes)."""
    for label in ("Sampling method", "Schedule type"):
        cfg.saved.pop(f"{tab}/{label}/value", None)
    defaults = (default_sampler, default_scheduler)
    sampler_name, scheduler, steps = _sampler_row(tab, cfg, samplers, schedulers, defaults)
    width, height, batch_count, batch_size = _size_rows(tab, cfg, show_size, native_size)
    cfg_scale = cfg.make(
        tab,
        gr.Slider,
        "CFG Scale",
        minimum=1.0,
        maximum=30.0,
        step=0.5,
        value=7.0,
        elem_id=f"{tab}_cfg_scale",
    )
    distilled = (family or FamilyDefaults()).distilled_cfg_scale
    distilled_cfg_scale = cfg.make(
        tab,
        gr.Slider,
        "Distilled CFG Scale",
        minimum=0.0,
        maximum=30.0,
        step=0.1,
        value=distilled if distilled is not None else 3.5,
        visible=distilled is not None,
        elem_id=f"{tab}_distilled_cfg_scale",
    )
    seed, reuse_seed, extras = _seed_rows(tab, cfg)
    return ParamControls(
        sampler_name, scheduler, steps, width, height, batch_count, batch_size, cfg_scale, distilled_cfg_scale,
        seed, *extras, reuse_seed,
    )  # fmt: skip


def family_outputs(params: ParamControls) -> list[Any]:
    """The components `family_values` updates, in its order."""
    return [params.sampler_name, params.steps, params.cfg_scale, params.distilled_cfg_scale]


def family_values(family: FamilyDefaults, base: dict[str, Any], default_sampler: str) -> list[Any]:
    """Updates for `family_outputs` when the UI's model family changes (Forge's presets): a flow family
    (Flux, SD3) sets its sampler, steps, CFG and distilled CFG; an SD family gets the page's own values back
    (`base`: the steps / CFG the page was built with, ui-config.json's) and the "Default sampler" setting."""
    distilled = family.distilled_cfg_scale
    shown = gr.update(
        visible=distilled is not None, **({"value": distilled} if distilled is not None else {})
    )
    if family.sampler_name is None:
        sampler = default_sampler or gr.update()
        return [sampler, base["steps"], base["cfg_scale"], shown]
    return [family.sampler_name, family.steps, family.cfg_scale, shown]


def _sampler_row(tab: str, cfg: UiConfig, samplers: list[str], schedulers: list[str],
                 defaults: tuple[str | Callable[[], str], ...]) -> tuple[Any, Any, Any]:  # fmt: skip
    """Sampling method, schedule type (`defaults`: their settings) and steps."""
    default_sampler, default_scheduler = defaults
    with gr.Row(elem_id=f"{tab}_sampler_row"):
        sampler_name = cfg.make(
            tab,
            gr.Dropdown,
            "Sampling method",
            save_value=False,
            choices=samplers,
            value=_initial_sampler(default_sampler, samplers),
            elem_id=f"{tab}_sampling",
            min_width=160,
        )
        scheduler = cfg.make(
            tab,
            gr.Dropdown,
            "Schedule type",
            save_value=False,
            choices=schedulers,
            value=_initial_sampler(default_scheduler, schedulers),
            elem_id=f"{tab}_scheduler",
            min_width=160,
        )
        steps = cfg.make(
            tab, gr.Slider, "Sampling steps", minimum=1, maximum=150, step=1, value=20, elem_id=f"{tab}_steps"
        )
    return sampler_name, scheduler, steps


def _size_rows(tab: str, cfg: UiConfig, show_size: bool, native_size: int) -> tuple[Any, Any, Any, Any]:
    """Width / height (with the swap button), batch count and batch size."""
    with gr.Row(elem_id=f"{tab}_dimensions_row", visible=show_size):
        with gr.Column(elem_id=f"{tab}_column_size", scale=4, min_width=200):
            size = {"minimum": 64, "maximum": 2048, "step": 8, "value": native_size, "save_value": False}
            width = cfg.make(tab, gr.Slider, "Width", elem_id=f"{tab}_width", **size)
            height = cfg.make(tab, gr.Slider, "Height", elem_id=f"{tab}_height", **size)
        swap = gr.Button("⇅", elem_id=f"{tab}_res_switch_btn", min_width=40, scale=0, size="sm")
        with gr.Column(elem_id=f"{tab}_column_batch", scale=2, min_width=160):
            batch = {"minimum": 1, "step": 1, "value": 1}
            batch_count = cfg.make(
                tab, gr.Slider, "Batch count", maximum=100, elem_id=f"{tab}_batch_count", **batch
            )
            batch_size = cfg.make(
                tab, gr.Slider, "Batch size", maximum=8, elem_id=f"{tab}_batch_size", **batch
            )
    swap.click(lambda w, h: (h, w), inputs=[width, height], outputs=[width, height], show_progress="hidden")
    return width, height, batch_count, batch_size


def _seed_rows(tab: str, cfg: UiConfig) -> tuple[Any, Any, tuple[Any, Any, Any, Any]]:
    """Seed with its buttons; the "Extra" group: variation seed and strength, seed resize."""
    with gr.Row(elem_id=f"{tab}_seed_row"):
        seed = cfg.make(tab, gr.Number, "Seed", value=-1, precision=0, elem_id=f"{tab}_seed", min_width=160)
        random_seed = gr.Button("🎲", elem_id=f"{tab}_random_seed", min_width=40, scale=0, size="sm")
        reuse_seed = gr.Button("♻️", elem_id=f"{tab}_reuse_seed", min_width=40, scale=0, size="sm")
        seed_extras = gr.Checkbox(label="Extra", value=False, elem_id=f"{tab}_subseed_show", min_width=80)
    with gr.Group(visible=False, elem_id=f"{tab}_seed_extras") as extras_group:
        with gr.Row():
            subseed = cfg.make(
                tab,
                gr.Number,
                "Variation seed",
                value=-1,
                precision=0,
                elem_id=f"{tab}_subseed",
                min_width=160,
            )
            subseed_strength = cfg.make(
                tab,
                gr.Slider,
                "Variation strength",
                minimum=0.0,
                maximum=1.0,
                step=0.01,
                value=0.0,
                elem_id=f"{tab}_subseed_strength",
            )
        with gr.Row():
            resize = {"minimum": 0, "maximum": 2048, "step": 8, "value": 0}
            resize_w = cfg.make(
                tab, gr.Slider, "Resize seed from width", elem_id=f"{tab}_seed_resize_from_w", **resize
            )
            resize_h = cfg.make(
                tab, gr.Slider, "Resize seed from height", elem_id=f"{tab}_seed_resize_from_h", **resize
            )
    seed_extras.change(lambda show: gr.update(visible=show), inputs=seed_extras, outputs=extras_group)
    random_seed.click(lambda: -1, outputs=seed, show_progress="hidden")
    return seed, reuse_seed, (subseed, subseed_strength, resize_w, resize_h)


# -- Hires. fix (txt2img) ------------------------------------------------------------------------------------
SAME_SAMPLER, SAME_SCHEDULER, SAME_CHECKPOINT = (
    "Use same sampler",
    "Use same scheduler",
    "Use same checkpoint",
)


@dataclass
class HiresControls:
    """A1111's Hires. fix accordion of the txt2img tab (its elem_ids), read into `RawFields` by name."""

    enable_hr: gr.Checkbox
    hr_upscaler: gr.Dropdown
    hr_second_pass_steps: gr.Slider
    denoising_strength: gr.Slider
    hr_scale: gr.Slider
    hr_resize_x: gr.Slider
    hr_resize_y: gr.Slider
    hr_sampler_name: gr.Dropdown
    hr_scheduler: gr.Dropdown
    hr_cfg: gr.Slider
    hr_prompt: gr.Textbox
    hr_negative_prompt: gr.Textbox
    hr_checkpoint_name: gr.Dropdown
    final_resolution: gr.HTML  # A1111's "from WxH to WxH"

    def components(self) -> list[gr.components.Component]:
        return [getattr(self, f.name) for f in fields(self) if f.name != "final_resolution"]

    def request_fields(self, values: dict) -> dict[str, Any]:
        """`RawFields` keyword arguments; the "Use same ..." choices and an empty prompt mean the first pass's.
        The hires CFG slider at 0 means "the same CFG scale" (A1111's hires CFG is only written when set)."""
        cfg = float(values[self.hr_cfg])
        return {
            "enable_hr": bool(values[self.enable_hr]),
            "hr_upscaler": values[self.hr_upscaler],
            "hr_second_pass_steps": int(values[self.hr_second_pass_steps]),
            "denoising_strength": float(values[self.denoising_strength]),
            "hr_scale": float(values[self.hr_scale]),
            "hr_resize_x": int(values[self.hr_resize_x]),
            "hr_resize_y": int(values[self.hr_resize_y]),
            "hr_sampler_name": values[self.hr_sampler_name],
            "hr_scheduler": values[self.hr_scheduler],
            "hr_cfg": cfg if cfg > 0 else None,
            "hr_prompt": values[self.hr_prompt] or "",
            "hr_negative_prompt": values[self.hr_negative_prompt] or "",
            "hr_checkpoint_name": values[self.hr_checkpoint_name] or SAME_CHECKPOINT,
        }

    def paste_fields(self) -> tuple:
        """(infotext key, component, kind) for webui.paste: numbers, text and choices as A1111 pastes them."""
        return (
            ("Hires. fix", self.enable_hr, bool),
            ("Hires upscaler", self.hr_upscaler, str),
            ("Hires steps", self.hr_second_pass_steps, int),
            ("Denoising strength", self.denoising_strength, float),
            ("Hires upscale", self.hr_scale, float),
            ("Hires resize-1", self.hr_resize_x, int),
            ("Hires resize-2", self.hr_resize_y, int),
            ("Hires sampler", self.hr_sampler_name, str),
            ("Hires schedule type", self.hr_scheduler, str),
            ("Hires CFG Scale", self.hr_cfg, float),
            ("Hires prompt", self.hr_prompt, str),
            ("Hires negative prompt", self.hr_negative_prompt, str),
            ("Hires checkpoint", self.hr_checkpoint_name, str),
        )


def final_resolution(
    enabled: bool, width: int, height: int, scale: float, resize_x: int, resize_y: int
) -> str:
    """A1111's `calc_resolution_hires` text, from the same size rules the engine runs."""
    from sdwebui.engine.hires import HiresFix

    if not enabled:
        return ""
    hires = HiresFix(hr_scale=float(scale), hr_resize_x=int(resize_x), hr_resize_y=int(resize_y))
    if hires.problems(None, None):
        return ""
    to_w, to_h = hires.size(int(width), int(height)).final
    return (
        f"from <span class='resolution'>{int(width)}x{int(height)}</span> "
        f"to <span class='resolution'>{to_w}x{to_h}</span>"
    )


def build_hires(tab: str, cfg: UiConfig, backend: Any, params: ParamControls) -> HiresControls:
    """The accordion: upscaler, hires steps, denoising, scale or target size, sampler, CFG, prompts."""
    from sdwebui.engine.hires import upscaler_names

    enable = gr.Checkbox(label="Hires. fix", value=False, elem_id=f"{tab}_enable_hr")
    with gr.Accordion("Hires. fix", open=False, elem_id=f"{tab}_hr") as accordion:
        with gr.Row(elem_id=f"{tab}_hires_fix_row1"):
            upscaler = cfg.make(tab, gr.Dropdown, "Upscaler", choices=upscaler_names(backend.upscaler_models()), value="Latent",
                                elem_id=f"{tab}_hr_upscaler")  # fmt: skip
            steps = cfg.make(tab, gr.Slider, "Hires steps", minimum=0, maximum=150, step=1, value=0,
                             elem_id=f"{tab}_hires_steps")  # fmt: skip
            denoise = cfg.make(tab, gr.Slider, "Denoising strength", minimum=0.0, maximum=1.0, step=0.01,
                               value=0.7, elem_id=f"{tab}_denoising_strength")  # fmt: skip
        with gr.Row(elem_id=f"{tab}_hires_fix_row2"):
            scale = cfg.make(tab, gr.Slider, "Upscale by", minimum=1.0, maximum=4.0, step=0.05, value=2.0,
                             elem_id=f"{tab}_hr_scale")  # fmt: skip
            size = {"minimum": 0, "maximum": 2048, "step": 8, "value": 0}
            resize_x = cfg.make(tab, gr.Slider, "Resize width to", elem_id=f"{tab}_hr_resize_x", **size)
            resize_y = cfg.make(tab, gr.Slider, "Resize height to", elem_id=f"{tab}_hr_resize_y", **size)
        final = gr.HTML(value="", elem_id="txtimg_hr_finalres", elem_classes="resolution")  # A1111's id
        with gr.Row(elem_id=f"{tab}_hires_fix_row3"):
            checkpoint = cfg.make(tab, gr.Dropdown, "Hires checkpoint", value=SAME_CHECKPOINT,
                                  choices=[SAME_CHECKPOINT, *backend.checkpoints()], elem_id=f"{tab}_hr_checkpoint")  # fmt: skip
            sampler = cfg.make(tab, gr.Dropdown, "Hires sampling method", value=SAME_SAMPLER,
                               choices=[SAME_SAMPLER, *backend.samplers()], elem_id=f"{tab}_hr_sampler")  # fmt: skip
            scheduler = cfg.make(tab, gr.Dropdown, "Hires schedule type", value=SAME_SCHEDULER,
                                 choices=[SAME_SCHEDULER, *backend.schedulers()], elem_id=f"{tab}_hr_scheduler")  # fmt: skip
            hr_cfg = cfg.make(tab, gr.Slider, "Hires CFG Scale (0: same)", minimum=0.0, maximum=30.0, step=0.5,
                              value=0.0, elem_id=f"{tab}_hr_cfg")  # fmt: skip
        with gr.Row(elem_id=f"{tab}_hires_fix_row4"):
            prompt = gr.Textbox(label="Hires prompt", lines=3, placeholder="empty: the prompt",
                                elem_id=f"{tab}_hr_prompt")  # fmt: skip
            negative = gr.Textbox(label="Hires negative prompt", lines=3, placeholder="empty: the negative prompt",
                                  elem_id=f"{tab}_hr_neg_prompt")  # fmt: skip
    enable.change(lambda on: gr.update(open=True) if on else gr.update(), inputs=enable, outputs=accordion,
                  show_progress="hidden")  # fmt: skip
    size_inputs = [enable, params.width, params.height, scale, resize_x, resize_y]
    for component in size_inputs:
        component.change(final_resolution, inputs=size_inputs, outputs=final, show_progress="hidden")
    return HiresControls(enable, upscaler, steps, denoise, scale, resize_x, resize_y, sampler, scheduler, hr_cfg,
                         prompt, negative, checkpoint, final)  # fmt: skip
