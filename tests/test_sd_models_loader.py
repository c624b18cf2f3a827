import json
import os

import pytest
import safetensors.torch
import torch

from sdwebui.models.discovery import checkpoint_info
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.loader import load_checkpoint, load_vae_file
from sdwebui.models.model import ModelFamily
from tests import tiny_models


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_round_trip(tmp_path, tiny_model_factory, family, suffix):
    model = tiny_model_factory(family)
    path = tiny_models.write_single_file(model, tmp_path / f"m{suffix}")
    loaded = load_checkpoint(checkpoint_info(path))
    assert loaded.family == family
    assert _same(model.unet, loaded.unet) and _same(model.vae, loaded.vae)
    assert all(_same(a, b) for a, b in zip(model.text_encoders, loaded.text_encoders, strict=True))
    assert loaded.prediction_type == model.prediction_type
    assert [t.pad_token for t in loaded.tokenizers] == [t.pad_token for t in model.tokenizers]
    ids = loaded.tokenizers[0]("a cat", return_tensors="pt").input_ids
    assert torch.allclose(loaded.text_encoders[0](ids)[0], model.text_encoders[0](ids)[0])


@pytest.mark.parametrize("family", [ModelFamily.SD1, ModelFamily.SD2_V, ModelFamily.SDXL])
def test_diffusers_folder(tmp_path, tiny_model_factory, family):
    model = tiny_model_factory(family)
    folder = tiny_models.write_diffusers_folder(model, tmp_path / "df")
    info = checkpoint_info(folder)
    assert info.is_diffusers_folder
    loaded = load_checkpoint(info)
    assert loaded.family == family and _same(model.unet, loaded.unet)


def test_sd2_prediction_from_sidecars_and_names(tmp_path, tiny_sd2v_model):
    path = tiny_models.write_single_file(tiny_sd2v_model, tmp_path / "model.safetensors", sidecar=False)
    sidecar = tiny_models.tiny_config("sd2-v")
    del sidecar["family"], sidecar["scheduler"]
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    assert load_checkpoint(checkpoint_info(path)).family == ModelFamily.SD2_V  # default: v
    path.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: eps\n")
    assert load_checkpoint(checkpoint_info(path)).prediction_type == "epsilon"
    path.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n")
    assert load_checkpoint(checkpoint_info(path)).prediction_type == "v_prediction"
    path.with_suffix(".yaml").unlink()
    base = path.rename(tmp_path / "sd21-512-base.safetensors")
    base.with_suffix(".json").write_text(json.dumps(sidecar))
    assert load_checkpoint(checkpoint_info(base)).family == ModelFamily.SD2


def test_missing_and_unexpected_keys_are_reported(tmp_path, tiny_sd1_model):
    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "m.safetensors")
    state = safetensors.torch.load_file(path)
    del state["model.diffusion_model.out.2.weight"]
    state["model.diffusion_model.surprise.weight"] = torch.zeros(1)
    safetensors.torch.save_file(state, path)
    with pytest.raises(CheckpointLoadError, match=r"missing key.*out\.2\.weight.*unexpected key.*surprise"):
        load_checkpoint(checkpoint_info(path))


def test_real_size_file_without_sidecar_is_a_shape_error(tmp_path, tiny_sd1_model):
    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "m.safetensors", sidecar=False)
    with pytest.raises(CheckpointLoadError, match=r"m\.safetensors.*shape mismatch.*m\.json"):
        load_checkpoint(checkpoint_info(path))


def test_extras_are_tolerated(tmp_path, tiny_sd1_model):
    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "m.safetensors")
    state = safetensors.torch.load_file(path)
    state["alphas_cumprod"] = torch.ones(1000)
    state["model_ema.decay"] = torch.tensor(0.999)
    state["model_ema.diffusion_modelout2weight"] = torch.zeros(4)
    safetensors.torch.save_file(state, path)
    assert load_checkpoint(checkpoint_info(path)).family == ModelFamily.SD1


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(CheckpointLoadError, match=r"evil\.ckpt.*refused to unpickle.*system"):
        load_checkpoint(checkpoint_info(path))
    assert not marker.exists()


def test_lightning_style_ckpt_with_numpy_scalars_loads(tmp_path, tiny_sd1_model):
    import numpy as np

    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "m.ckpt")
    data = torch.load(path, weights_only=True)
    data["callbacks"] = {"best_model_score": np.float64(0.5), "step": np.int64(3)}
    torch.save(data, path)
    assert load_checkpoint(checkpoint_info(path)).family == ModelFamily.SD1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("just some text"), "not a readable"),
    ],
)
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_bad_files_give_one_clear_error(tmp_path, make, message, suffix):
    path = tmp_path / f"bad{suffix}"
    make(path)
    with pytest.raises(CheckpointLoadError, match=message) as info:
        load_checkpoint(checkpoint_info(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_and_foreign_safetensors(tmp_path, tiny_sd1_model):
    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointLoadError, match=r"m\.safetensors: not a readable safetensors"):
        load_checkpoint(checkpoint_info(path))
    other = tmp_path / "bert.safetensors"
    safetensors.torch.save_file({"encoder.layer.0.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointLoadError, match=r"bert\.safetensors: not a Stable Diffusion checkpoint"):
        load_checkpoint(checkpoint_info(other))
    with pytest.raises(CheckpointLoadError, match="no such file"):
        load_checkpoint(checkpoint_info(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_standalone_vae_files(tmp_path, tiny_sd1_model, layout):
    other = tiny_models.tiny_loaded_model("sd1", seed=1).vae
    path = tiny_models.write_vae_file(
        other, tmp_path / f"v.{'pt' if layout == 'ldm' else 'safetensors'}", layout
    )
    vae = load_vae_file(path, dict(tiny_sd1_model.vae.config), torch.device("cpu"), torch.float32)
    assert _same(vae, other)


def test_policy_dtypes_are_applied_while_assigning(tmp_path, tiny_sd1_model, caplog):
    from sdwebui.models.loader import DevicePolicy

    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "half.safetensors", dtype=torch.float16)
    info = checkpoint_info(path)
    with caplog.at_level("WARNING"):
        full = load_checkpoint(info, DevicePolicy())
        mixed = load_checkpoint(info, DevicePolicy(dtype=torch.float16, vae_dtype=torch.float32))
    assert "should be kept in float32" not in caplog.text  # no second pass through diffusers' .to()
    tensors = [*full.unet.state_dict().values(), *full.vae.state_dict().values()]
    assert all(t.dtype == torch.float32 for t in tensors)
    assert {p.dtype for p in full.text_encoders[0].parameters()} == {torch.float32}
    assert {p.dtype for p in mixed.unet.parameters()} == {torch.float16}
    assert {p.dtype for p in mixed.vae.parameters()} == {torch.float32}
    expected = tiny_sd1_model.unet.conv_in.weight.to(torch.float16)
    assert torch.equal(mixed.unet.conv_in.weight, expected)
    assert torch.equal(full.unet.conv_in.weight, expected.float())
    assert mixed.text_encoders[0].get_input_embeddings().weight.dtype == torch.float16


def test_matching_dtype_is_assigned_without_copying(tmp_path, tiny_sd1_model):
    from sdwebui.models.loader import DevicePolicy, convert_state_dict, resolve_config

    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "half.safetensors", dtype=torch.float16)
    state = safetensors.torch.load_file(str(path))
    family, config, _ = resolve_config(path, {k: tuple(v.shape) for k, v in state.items()}, {})
    half = convert_state_dict(
        state, family, config, path, DevicePolicy(dtype=torch.float16, vae_dtype=torch.float16)
    )
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert half.unet.conv_in.weight.data_ptr() == state[key].data_ptr()  # the file's tensor itself
    full = convert_state_dict(state, family, config, path, DevicePolicy())
    assert full.unet.conv_in.weight.data_ptr() != state[key].data_ptr()
    assert torch.equal(full.unet.conv_in.weight, state[key].float())


def _mapped_file(tensor: torch.Tensor) -> str:
    """The file backing the memory of ``tensor`` per /proc/self/maps ('' or '[heap]' when not file-backed)."""
    address = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5] if len(fields) > 5 else ""
    return ""


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_zip_ckpt_is_memory_mapped_and_legacy_ckpt_still_loads(tmp_path, tiny_sd1_model):
    from sdwebui.models.safe_pickle import load_pickled_checkpoint

    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "zip.ckpt")
    state = load_pickled_checkpoint(path)["state_dict"]
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert _mapped_file(state[key]) == str(path)  # not read into memory until used
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": dict(state)}, legacy, _use_new_zipfile_serialization=False)
    legacy.with_suffix(".json").write_text(path.with_suffix(".json").read_text())  # tiny sizes sidecar
    loaded = load_checkpoint(checkpoint_info(legacy))
    assert torch.equal(loaded.unet.conv_in.weight, tiny_sd1_model.unet.conv_in.weight)
