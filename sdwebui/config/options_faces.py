"""A1111's face restoration settings (its "Face restoration" section).

Where each one acts: `face_restoration_model` and `code_former_weight` are what txt2img / img2img
`restore_faces` uses (sdwebui.engine.face_restoration); `face_restoration_unload` moves the restorer and the
detector back to the CPU after each use.
"""

from __future__ import annotations

from sdwebui.config.option_info import OptionInfo
from sdwebui.models.face_restorers import CODEFORMER_LICENCE, RESTORERS

SECTION_FACES = ("face-restoration", "Face restoration")


def faces_templates() -> dict[str, OptionInfo]:
    return {
        "face_restoration_model": OptionInfo(
            "CodeFormer", "Face restoration model", choices=list(RESTORERS)
        ).info(CODEFORMER_LICENCE),
        "code_former_weight": OptionInfo(
            0.5,
            "CodeFormer weight",
            component_args={"minimum": 0.0, "maximum": 1.0, "step": 0.01},
        ).info("0 = maximum effect; 1 = minimum effect"),
        "face_restoration_unload": OptionInfo(
            False, "Move face restoration model from VRAM into RAM after processing"
        ),
    }
