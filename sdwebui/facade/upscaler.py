"""A1111's `modules.upscaler`: `Upscaler` and `UpscalerData`, over the app's upscalers.

`shared.sd_upscalers` lists `UpscalerData` as A1111 does: None, Lanczos, Nearest, then every usable
upscaler model file (ESRGAN, RealESRGAN, SwinIR, DAT, HAT, ... in `models/<family>/`). Extensions call
`data.scaler.upscale(image, scale, data.data_path)` (Ultimate SD upscale does); that runs the app's own
upscaling (sdwebui.engine.upscaling: tiled, with the ESRGAN_tile settings) on the calling thread.
"""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from sdwebui.engine import upscaling
from sdwebui.facade import shared

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


class Upscaler:
    """Base class (A1111): subclasses set `name`, fill `scalers` and implement `do_upscale`."""

    name: str | None = None
    model_path: str | None = None
    model_name: str | None = None
    model_url: str | None = None
    enable = True
    filter = None
    model = None
    user_path: str | None = None
    scalers: list[UpscalerData]
    tile = True

    def __init__(self, create_dirs: bool = False):
        self.scalers = []
        self.mod_pad_h = self.mod_scale = None
        self.tile_size = int(shared.opts.get("ESRGAN_tile", 192))
        self.tile_pad = int(shared.opts.get("ESRGAN_tile_overlap", 8))
        if create_dirs and self.model_path:
            os.makedirs(self.model_path, exist_ok=True)

    def do_upscale(self, img: Image.Image, selected_model: str | None) -> Image.Image:
        raise NotImplementedError(f"{type(self).__name__}.do_upscale")

    def upscale(self, img: Image.Image, scale: float, selected_model: str | None = None) -> Image.Image:
        """As A1111: `do_upscale` until the image reaches `scale` (at most 3 times), then Lanczos to size."""
        self.scale = scale
        dest_w, dest_h = int(img.width * scale // 8 * 8), int(img.height * scale // 8 * 8)
        for _ in range(3):
            if img.width >= dest_w and img.height >= dest_h:
                break
            shape = img.size
            img = self.do_upscale(img, selected_model)
            if shape == img.size:
                break
        if img.size != (dest_w, dest_h):
            img = img.resize((dest_w, dest_h), resample=LANCZOS)
        return img

    def load_model(self, path: str) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.load_model")

    def find_models(self, ext_filter: list[str] | None = None) -> list[str]:
        """Files under `user_path` and `model_path` with one of the extensions (modelloader.load_models)."""
        found = []
        for folder in (self.user_path, self.model_path):
            for root, _dirs, files in os.walk(folder or "", followlinks=True) if folder else ():
                found += [os.path.join(root, f) for f in sorted(files)
                          if not ext_filter or any(f.lower().endswith(e.lower()) for e in ext_filter)]  # fmt: skip
        return list(dict.fromkeys(found))


class UpscalerData:
    def __init__(self, name: str, path: str | None, upscaler: Upscaler | None = None, scale: float = 4,
                 model: Any = None, sha256: str | None = None):  # fmt: skip
        self.name, self.data_path, self.local_data_path = name, path, path
        self.scaler, self.scale, self.model, self.sha256 = upscaler, scale, model, sha256

    def __repr__(self) -> str:
        return f"<UpscalerData name={self.name} path={self.data_path} scale={self.scale}>"


class UpscalerNone(Upscaler):
    name = "None"

    def __init__(self, dirname: str | None = None):
        super().__init__(False)
        self.scalers = [UpscalerData("None", None, self)]

    def do_upscale(self, img: Image.Image, selected_model: str | None = None) -> Image.Image:
        return img

    def upscale(self, img: Image.Image, scale: float, selected_model: str | None = None) -> Image.Image:
        return img  # A1111: "None" keeps the image as it is


class UpscalerLanczos(Upscaler):
    name, _resample = "Lanczos", LANCZOS

    def __init__(self, dirname: str | None = None):
        super().__init__(False)
        self.scalers = [UpscalerData(self.name, None, self)]

    def do_upscale(self, img: Image.Image, selected_model: str | None = None) -> Image.Image:
        return img.resize(
            (int(img.width * self.scale), int(img.height * self.scale)), resample=self._resample
        )


class UpscalerNearest(UpscalerLanczos):
    name, _resample = "Nearest", NEAREST


class UpscalerModels(Upscaler):
    """The app's upscaler model files; `selected_model` is the file path (`data_path`) or the name."""

    name = "Upscaler models"

    def __init__(self, models: Any):
        super().__init__(False)
        self._models = models
        self.scalers = [
            UpscalerData(e.name, str(e.path), self, e.scale or 4) for e in models.library.usable()
        ]

    def do_upscale(self, img: Image.Image, selected_model: str | None) -> Image.Image:
        target = (int(img.width * self.scale), int(img.height * self.scale))
        return upscaling.upscale(img, target, self._model_name(selected_model), self._models)

    def upscale(self, img: Image.Image, scale: float, selected_model: str | None = None) -> Image.Image:
        # the engine already applies the model up to 3 times and resizes to the exact size
        return upscaling.upscale(img, float(scale), self._model_name(selected_model), self._models)

    def _model_name(self, selected: str | None) -> str:
        for data in self.scalers:
            if selected in (data.name, data.data_path):
                return data.name
        return self.scalers[0].name if self.scalers and selected is None else str(selected)


def all_upscalers() -> list[UpscalerData]:
    """None, Lanczos, Nearest, then the app's usable upscaler model files."""
    found = [*UpscalerNone().scalers, *UpscalerLanczos().scalers, *UpscalerNearest().scalers]
    services = shared._services
    models = services.upscalers() if services is not None and hasattr(services, "upscalers") else None
    if models is not None:
        found += UpscalerModels(models).scalers
    return found


def refresh_sd_upscalers() -> list[UpscalerData]:
    """Fill `shared.sd_upscalers` in place (the list object extensions imported stays the same)."""
    shared.sd_upscalers[:] = all_upscalers()
    return shared.sd_upscalers
