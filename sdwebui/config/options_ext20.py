"""A1111 settings that extensions read (`shared.opts.<name>`) and the app itself does not apply.

They exist so an extension reading them gets A1111's default instead of an AttributeError, and so a user can
set what an extension honours; each label says that the app does not use it.
"""

from __future__ import annotations

from typing import Any

from sdwebui.config.option_info import OptionInfo

SECTION_COMPAT = ("a1111-compat", "A1111 settings read by extensions")
_NOTE = " (read by extensions; the app itself does not apply it)"


def ext20_templates() -> dict[str, OptionInfo]:
    """name -> OptionInfo."""

    def _info(
        default: Any, label: str, choices: list[Any] | None = None, component_args: Any = None
    ) -> OptionInfo:
        return OptionInfo(default, label + _NOTE, choices=choices, component_args=component_args)

    return {
        "img2img_background_color": _info(
            "#ffffff", "img2img: fill transparent parts of the input with this color"
        ),
        "img2img_inpaint_mask_brush_color": _info("#ffffff", "Inpaint mask brush color"),
        "img2img_sketch_default_brush_color": _info("#ffffff", "Sketch initial brush color"),
        "grid_save": _info(True, "Always save all generated image grids"),
        "grid_format": _info("png", "File format for grids", ["png", "jpg", "webp"]),
        "grid_extended_filename": _info(
            False, "Add extended info (seed, prompt) to filename when saving grid"
        ),
        "grid_only_if_multiple": _info(True, "Do not save grids consisting of one picture"),
        "grid_prevent_empty_spots": _info(False, "Prevent empty spots in grid (when set to autodetect)"),
        "grid_zip_filename_pattern": _info("", "Archive filename pattern"),
        "grid_text_active_color": _info("#000000", "Text color for image grids"),
        "grid_text_inactive_color": _info("#999999", "Inactive text color for image grids"),
        "grid_background_color": _info("#ffffff", "Background color for image grids"),
        "font": _info("", "Font for image grids that have text"),
        "temp_dir": _info("", "Directory for temporary images; leave empty for default"),
        "clean_temp_dir_at_start": _info(
            False, "Cleanup non-default temporary directory when starting webui"
        ),
        "outdir_save": _info("log/images", "Directory for saving images using the Save button"),
        "upcast_attn": _info(False, "Upcast cross attention layer to float32"),
        "sd_checkpoint_cache": _info(
            0, "Checkpoints to cache in RAM", component_args={"minimum": 0, "maximum": 10}
        ),
        "emphasis": _info("Original", "Emphasis mode", ["Original", "No norm", "None"]),
        "uni_pc_variant": _info("bh1", "UniPC variant", ["bh1", "bh2", "vary_coeff"]),
        "uni_pc_skip_type": _info(
            "time_uniform", "UniPC skip type", ["time_uniform", "time_quadratic", "logSNR"]
        ),
        "uni_pc_order": _info(3, "UniPC order", component_args={"minimum": 1, "maximum": 50}),
        "uni_pc_lower_order_final": _info(True, "UniPC lower order final"),
        "sub_quad_q_chunk_size": _info(1024, "Sub-quadratic attention query chunk size"),
        "sub_quad_kv_chunk_size": _info(None, "Sub-quadratic attention kv chunk size"),
        "sub_quad_chunk_threshold": _info(None, "Sub-quadratic attention chunking threshold (%)"),
    }
