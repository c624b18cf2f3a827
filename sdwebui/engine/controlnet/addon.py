"""The ControlNet / T2I-Adapter U-Net add-on: every enabled unit's residuals in every U-Net call of its window.

Semantics are sd-webui-controlnet's:
- a unit acts at steps whose fraction `step / steps` of the pass lies in [guidance_start, guidance_end];
- Balanced: every residual times `weight`, on the cond and the uncond rows;
- "My prompt is more important": soft injection, residual i of n times `weight * 0.825 ** (12 - i)` (13 for
  SD 1.x, the first 10 of those for SDXL; T2I-Adapters: 0.25, 0.62, 0.825, 1.0);
- "ControlNet is more important": soft injection and the control only on the cond rows (the uncond half of
  classifier-free guidance gets none, so guidance pushes towards the control);
- `advanced_weighting` replaces the per-residual scales; `effective_region_mask` limits them to a region;
- hires option: with a second pass, "Low res only" acts in the first pass, "High res only" in the later ones;
  canny and mlsd maps get the soft weights in the hires pass whatever the mode (as the extension);
tile_colorfix(+sharp) / inpaint_only units also correct the U-Net's x0 after each call (x0_fix.py).
`low_vram`: the unit's model waits on the offload device (host memory) and comes to the compute device only
while the unit runs (for each U-Net call, as the extension's low VRAM), moved by the job's memory placement.
Several units' residuals add up. Each row of the U-Net batch takes the map of its image (`image_index % maps`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from sdwebui.engine.addons import UNetCall
from sdwebui.engine.controlnet import hint as hints
from sdwebui.engine.controlnet.units import ARGS_FIELD, ControlMode, ControlNetUnit, HiResOption
from sdwebui.engine.controlnet.x0_fix import COLORFIX, X0Fix
from sdwebui.engine.errors import RequestError
from sdwebui.engine.memory import placement as placements
from sdwebui.models.controlnet.layouts import CONTROLNET_UNION
from sdwebui.models.controlnet.loading import ControlModel

SOFT_BASE, SOFT_TOP = 0.825, 12
ADAPTER_SOFT = (0.25, 0.62, 0.825, 1.0)
# xinsir's ControlNet++ (Union) control types, in the model's order
UNION_TYPES = ("OpenPose", "Depth", "Soft Edge", "Hard Edge", "Normal Map", "Segmentation", "Tile", "Inpaint")


@dataclass
class ActiveUnit:
    """One enabled unit ready to run: its model and its detected maps (one per control image)."""

    index: int  # the unit's position in alwayson_scripts.controlnet.args
    unit: ControlNetUnit
    model: ControlModel
    maps: list[Image.Image]
    union_type: int | None = None  # the Union model's control type index
    fix: X0Fix | None = None  # tile_colorfix / inpaint_only's x0 correction
    _hints: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    _features: dict[tuple[int, int], list[torch.Tensor]] = field(default_factory=dict, repr=False)
    _regions: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def hint(self, width: int, height: int) -> torch.Tensor:
        """[maps, C, height, width] on the model's device, built once per size (a hires pass has its own)."""
        key = (width, height)
        if key not in self._hints:
            fitted = [
                hints.to_tensor(hints.fit_map(m, width, height, self.unit.resize_mode)) for m in self.maps
            ]
            self._hints[key] = torch.stack(fitted).to(self.model.device, self.model.dtype)
        return self._hints[key]

    def adapter_features(self, width: int, height: int) -> list[torch.Tensor]:
        """A T2I-Adapter's features of every map: they depend on the map only, so once per size."""
        key = (width, height)
        if key not in self._features:
            with self.running():
                self._features[key] = list(self.model.module(self.hint(width, height)[:, :3]))
        return self._features[key]

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The model on the compute device while the context is open; a low_vram unit's off it afterwards."""
        mover = _mover()
        module = self.model.module
        if mover.where(module) != self.model.device:
            mover.move(module, self.model.device)
        try:
            yield
        finally:
            if self.unit.low_vram:
                mover.move(module, mover.offload)

    def park(self) -> None:
        """Before the job's first step: a low_vram unit's model off the compute device."""
        mover = _mover()
        if self.unit.low_vram and mover.where(self.model.module) != mover.offload:
            mover.move(self.model.module, mover.offload)

    def region(self, height: int, width: int) -> torch.Tensor | None:
        mask = self.unit.effective_region_mask
        if mask is None:
            return None
        if (height, width) not in self._regions:
            self._regions[(height, width)] = hints.region_mask(mask, width, height).to(self.model.device)
        return self._regions[(height, width)]


class ControlNetAddon:
    """The U-Net add-on of one job's ControlNet units (sdwebui.engine.addons.UNetAddon)."""

    def __init__(self, units: list[ActiveUnit], latent_scale: int, hires: bool):
        self.units = units
        self._parked = False  # low_vram units' models sent off the device at the first call (in the job)
        self.latent_scale = latent_scale
        self.hires = hires  # the job has a second (high-res) pass

    def before_unet(self, call: UNetCall) -> None:
        if not self._parked:
            self._parked = True
            for active in self.units:
                active.park()
        for active in self.units:
            if not self._acts(active.unit, call):
                continue
            if active.model.is_adapter:
                self._adapter(active, call)
            else:
                self._controlnet(active, call)

    def wrap_attention(self, name: str, processor: Any) -> Any | None:
        return None

    def after_unet(self, call: UNetCall, output: torch.Tensor) -> torch.Tensor:
        """The units' x0 fixes, colorfix ones first (the extension's order), whatever the guidance window."""
        fixed = [a for a in self.units if a.fix is not None]
        for active in sorted(fixed, key=lambda a: a.fix.kind != COLORFIX):
            # the extension doubles colorfix's blur in the hires pass unless the unit is off there
            hires_pass = (
                self.hires and call.pass_index > 0 and active.unit.hr_option != HiResOption.LOW_RES_ONLY
            )
            output = active.fix.apply(call, output, self.latent_scale, hires_pass)
        return output

    def _acts(self, unit: ControlNetUnit, call: UNetCall) -> bool:
        if unit.weight == 0 and not unit.advanced_weighting:
            return False  # residuals times 0: the plain image, without running the model
        if self.hires and unit.hr_option == HiResOption.LOW_RES_ONLY and call.pass_index > 0:
            return False
        if self.hires and unit.hr_option == HiResOption.HIGH_RES_ONLY and call.pass_index == 0:
            return False
        fraction = call.step / max(1, call.total_steps)
        return unit.guidance_start <= fraction <= unit.guidance_end

    def _selected_rows(self, unit: ControlNetUnit, call: UNetCall) -> list[int]:
        if unit.control_mode == ControlMode.CONTROL:
            return [i for i, row in enumerate(call.rows) if not row.uncond]
        return list(range(len(call.rows)))

    def _controlnet(self, active: ActiveUnit, call: UNetCall) -> None:
        rows = self._selected_rows(active.unit, call)
        if not rows:
            return
        model = active.model
        height, width = call.x.shape[-2] * self.latent_scale, call.x.shape[-1] * self.latent_scale
        maps = active.hint(width, height)
        hint = maps[[call.rows[r].image_index % len(maps) for r in rows]]
        channels = model.module.config.in_channels
        x = call.x[rows, :channels].to(model.device, model.dtype)
        context = call.encoder_hidden_states[rows].to(model.device, model.dtype)
        added = None
        if call.added_cond_kwargs is not None:
            added = {k: v[rows].to(model.device, model.dtype) for k, v in call.added_cond_kwargs.items()}
        kwargs: dict[str, Any] = {}
        if model.kind == CONTROLNET_UNION:
            count = int(model.module.config.num_control_type)
            kinds = torch.zeros(len(rows), count, device=model.device, dtype=model.dtype)
            kinds[:, active.union_type] = 1
            kwargs = {
                "controlnet_cond": [hint],
                "control_type": kinds,
                "control_type_idx": [active.union_type],
            }
        else:
            kwargs = {"controlnet_cond": hint}
        timestep = call.timestep.to(model.device)
        with active.running():
            down, mid = model.module(
                x,
                timestep,
                encoder_hidden_states=context,
                added_cond_kwargs=added,
                conditioning_scale=1.0,
                return_dict=False,
                **kwargs,
            )
        scales = self._scales(active, len(down) + 1, None, call.pass_index)
        down = [d * s for d, s in zip(down, scales[:-1], strict=True)]
        mid = mid * scales[-1]
        down, mid = [self._region(active, d) for d in down], self._region(active, mid)
        if len(rows) != len(call.rows):
            down, mid = [_scatter(d, rows, len(call.rows)) for d in down], _scatter(mid, rows, len(call.rows))
        call.add_residuals(down, mid)

    def _adapter(self, active: ActiveUnit, call: UNetCall) -> None:
        rows = self._selected_rows(active.unit, call)
        if not rows:
            return
        height, width = call.x.shape[-2] * self.latent_scale, call.x.shape[-1] * self.latent_scale
        features = active.adapter_features(width, height)
        pick = [call.rows[r].image_index % features[0].shape[0] for r in rows]
        scales = self._scales(active, len(features), ADAPTER_SOFT, call.pass_index)
        chosen = [self._region(active, f[pick] * s) for f, s in zip(features, scales, strict=True)]
        if len(rows) != len(call.rows):
            chosen = [_scatter(f, rows, len(call.rows)) for f in chosen]
        call.add_adapter_features(chosen)

    def _scales(
        self, active: ActiveUnit, count: int, soft_table: tuple[float, ...] | None, pass_index: int = 0
    ) -> list[float]:
        unit = active.unit
        if unit.advanced_weighting is not None:
            if len(unit.advanced_weighting) != count:
                raise RequestError(
                    f"{ARGS_FIELD}[{active.index}].advanced_weighting",
                    f"{active.model.title} takes {count} weights, got {len(unit.advanced_weighting)}",
                )
            return list(unit.advanced_weighting)
        # the extension softens thin-line maps (canny, mlsd) in the hires pass: fewer artifacts at the large size
        thin_lines_in_hires = (
            self.hires and pass_index > 0 and any(k in unit.module for k in ("canny", "mlsd"))
        )
        if unit.control_mode == ControlMode.BALANCED and not thin_lines_in_hires:
            return [unit.weight] * count
        if soft_table is not None:
            table = (
                soft_table[-count:]
                if count <= len(soft_table)
                else (1.0,) * (count - len(soft_table)) + soft_table
            )
            return [unit.weight * s for s in table]
        return [unit.weight * SOFT_BASE ** float(SOFT_TOP - i) for i in range(count)]

    def _region(self, active: ActiveUnit, residual: torch.Tensor) -> torch.Tensor:
        mask = active.region(residual.shape[-2], residual.shape[-1])
        return residual if mask is None else residual * mask.to(residual.dtype)


def _mover() -> placements.Mover:
    """The running job's mover (a test's fake device tracks it); outside a job a plain one."""
    placement = placements.current()
    return placement.mover if placement is not None else placements.Mover()


def _scatter(values: torch.Tensor, rows: list[int], total: int) -> torch.Tensor:
    """Rows computed for a subset of the batch, zeros elsewhere."""
    full = values.new_zeros((total, *values.shape[1:]))
    full[rows] = values
    return full
