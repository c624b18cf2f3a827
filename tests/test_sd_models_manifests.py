"""Real checkpoint layouts (key -> shape) go through detection and conversion on meta tensors: no real memory."""

import json
from pathlib import Path

import pytest
import torch

from sdwebui.models.loader import convert_state_dict, resolve_config
from sdwebui.models.model import ModelFamily

MANIFESTS = Path(__file__).parent / "fixtures" / "checkpoint-manifests"
CASES = [
    ("sd15", "v1-5-pruned-emaonly.safetensors", ModelFamily.SD1),
    ("sd15_inpaint", "sd-v1-5-inpainting.ckpt", ModelFamily.SD1_INPAINT),
    ("sd21v", "v2-1_768-ema-pruned.safetensors", ModelFamily.SD2_V),
    ("sdxl_base", "sd_xl_base_1.0.safetensors", ModelFamily.SDXL),
]


def _extras(manifest: str) -> dict[str, list[int]]:
    extras = json.loads((MANIFESTS / "extras_optional.json").read_text())
    if manifest.startswith("sdxl"):
        return dict(extras["sgm_denoiser(SDXL training code DiscreteDenoiser buffer)"])
    found = dict(extras["ldm_ddpm_schedule_buffers(SD1.x/SD2.x; DDPM.register_schedule)"])
    found.update(extras["ldm_litema_counters(SD1.x/SD2.x; LitEma buffers)"])
    return found


def _meta_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta", dtype=torch.float16) for k, v in shapes.items()}


@pytest.mark.parametrize("with_extras", [False, True])
@pytest.mark.parametrize("manifest, filename, family", CASES)
def test_manifest_is_fully_consumed(tmp_path, manifest, filename, family, with_extras):
    shapes = json.loads((MANIFESTS / f"{manifest}.json").read_text())
    if with_extras:
        shapes.update(_extras(manifest))
        if not manifest.startswith("sdxl"):  # a non-pruned file's EMA shadow weights
            shapes["model_ema.diffusion_modelinput_blocks00weight"] = shapes[
                "model.diffusion_model.input_blocks.0.0.weight"
            ]
    path = tmp_path / filename  # no file is written: detection/config come from keys, name and sidecars
    detected, config, _ = resolve_config(path, {k: tuple(v) for k, v in shapes.items()}, {})
    assert detected == family
    components = convert_state_dict(_meta_state(shapes), detected, config, path)
    modules = [components.unet, components.vae, *components.text_encoders]
    assert all(p.is_meta for m in modules for p in m.parameters())  # nothing real was allocated
    n_params = sum(len(m.state_dict()) for m in modules)
    assert n_params > 0.9 * len(json.loads((MANIFESTS / f"{manifest}.json").read_text()))


def test_manifest_with_a_key_removed_is_rejected(tmp_path):
    from sdwebui.models.errors import CheckpointLoadError

    shapes = json.loads((MANIFESTS / "sd15.json").read_text())
    del shapes["first_stage_model.decoder.conv_out.bias"]
    path = tmp_path / "broken.safetensors"
    _, config, _ = resolve_config(path, shapes, {})
    with pytest.raises(CheckpointLoadError, match="missing key.*decoder.conv_out.bias"):
        convert_state_dict(_meta_state(shapes), ModelFamily.SD1, config, path)


def test_sd21v_layout_is_eps_with_a_512_base_name(tmp_path):
    shapes = json.loads((MANIFESTS / "sd21v.json").read_text())
    family, config, reason = resolve_config(tmp_path / "v2-1_512-ema-pruned-512-base.safetensors", shapes, {})
    assert family == ModelFamily.SD2 and config["scheduler"]["prediction_type"] == "epsilon"
    family, _, _ = resolve_config(
        tmp_path / "x.safetensors", shapes, {"modelspec.prediction_type": "epsilon"}
    )
    assert family == ModelFamily.SD2
