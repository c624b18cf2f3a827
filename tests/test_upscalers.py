"""Upscaler models through spandrel: tiny random models of real architectures (ESRGAN old and new key layout,
RealESRGAN compact, SwinIR) written as a user's files; discovery, safe loading, tiling, exact output sizes,
and the API over real HTTP."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

from sdwebui.engine import upscaling
from sdwebui.engine.context import JobContext
from sdwebui.models.upscalers import UpscalerLibrary, library_for
from tests import browser as browser_helpers
from tests.api_server import start_server, write_tiny_checkpoints
from tests.face_restorer_fixtures import install_face_models, write_codeformer

# the browser fixture, for the Extras tab test; the face restoration files, written once per session
pytest_plugins = ("tests.browser", "tests.face_restorer_fixtures")


def _esrgan(scale: int):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(scale)
    return ESRGAN(num_filters=8, num_blocks=1, scale=scale)


def _new_arch_keys(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """The old-arch ESRGAN keys (model.N...) in the layout of RealESRGAN_x4plus.pth (xinntao's RRDBNet:
    conv_first, body.N.rdbM.convK, conv_body, conv_up1/2, conv_hr, conv_last)."""
    names = {"model.0": "conv_first", f"model.1.sub.{blocks}": "conv_body", "model.3": "conv_up1"}
    names |= {"model.6": "conv_up2", "model.8": "conv_hr", "model.10": "conv_last"}
    out = {}
    for key, value in state.items():
        prefix, kind = key.rsplit(".", 1)
        if prefix in names:
            out[f"{names[prefix]}.{kind}"] = value
            continue
        _, _, _, block, rdb, conv, _ = prefix.split(".")  # model.1.sub.B.RDBm.convk.0
        out[f"body.{block}.rdb{rdb[3:]}.{conv}.{kind}"] = value
    return out


def _compact():
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(7)
    return Compact(num_feat=8, num_conv=2, upscale=4)


def _swinir():
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(3)
    return SwinIR(
        embed_dim=12,
        depths=[1],
        num_heads=[2],
        window_size=4,
        upscale=2,
        upsampler="pixelshuffle",
        img_size=16,
    )


def _dat():
    from spandrel.architectures.DAT import DAT

    torch.manual_seed(5)
    return DAT(
        embed_dim=16,
        depth=[2],
        num_heads=[2],
        split_size=[2, 4],
        upscale=2,
        img_size=16,
        expansion_factor=2.0,
    )


def _hat():
    from spandrel.architectures.HAT import HAT

    torch.manual_seed(6)
    return HAT(
        embed_dim=12,
        depths=[1],
        num_heads=[2],
        window_size=4,
        upscale=2,
        img_size=16,
        num_feat=8,
        mlp_ratio=2.0,
        compress_ratio=3,
        squeeze_factor=4,
    )


class CodeRunner:
    """A pickle that would write a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("upscalers")
    models = root / "models"
    for family in ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT"):
        (models / family).mkdir(parents=True)
    torch.save(_esrgan(2).state_dict(), models / "ESRGAN" / "tiny2x.pth")
    save_file(_esrgan(4).state_dict(), models / "ESRGAN" / "tiny4x.safetensors")
    new_layout = {"params_ema": _new_arch_keys(_esrgan(4).state_dict(), blocks=1)}
    torch.save(new_layout, models / "RealESRGAN" / "tiny_x4plus.pth")
    save_file(_compact().state_dict(), models / "RealESRGAN" / "tiny_compact.safetensors")
    torch.save(_swinir().state_dict(), models / "SwinIR" / "tiny_swinir.pth")
    save_file(_dat().state_dict(), models / "DAT" / "tiny_dat.safetensors")
    torch.save(_hat().state_dict(), models / "HAT" / "tiny_hat.pth")
    (models / "ESRGAN" / "garbage.pth").write_bytes(b"not a model at all" * 10)
    torch.save({"weight": torch.zeros(3, 3)}, models / "ESRGAN" / "unknown_arch.pth")
    with open(models / "ESRGAN" / "evil.pth", "wb") as handle:
        pickle.dump(CodeRunner(root / "pwned.txt"), handle, protocol=2)
    return root


@pytest.fixture(scope="module")
def library(data_dir) -> UpscalerLibrary:
    return library_for(data_dir / "models")


def _image(width=20, height=12, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _direct(path: Path, image: Image.Image) -> np.ndarray:
    """The spandrel model of `path` on the whole image, as spandrel's own loader reads it (untiled)."""
    import spandrel

    model = spandrel.ModelLoader().load_from_file(path).eval()
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        out = model(tensor)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    return (out * 255.0).round().astype(np.uint8)


def _models(library, tile=0, overlap=8) -> upscaling.ModelUpscalers:
    return upscaling.ModelUpscalers(library, tiles=upscaling.TileSettings(tile, overlap))


def test_discovery_lists_models_with_architecture_and_scale_and_broken_files_with_reasons(library, data_dir):
    entries = {e.name: e for e in library.entries()}
    usable = {name: (e.architecture, e.scale, e.family) for name, e in entries.items() if e.usable}
    assert usable == {
        "tiny2x": ("ESRGAN", 2, "ESRGAN"),
        "tiny4x": ("ESRGAN", 4, "ESRGAN"),
        "tiny_x4plus": ("ESRGAN", 4, "RealESRGAN"),
        "tiny_compact": ("RealESRGAN Compact", 4, "RealESRGAN"),
        "tiny_swinir": ("SwinIR", 2, "SwinIR"),
        "tiny_dat": ("DAT", 2, "DAT"),
        "tiny_hat": ("HAT", 2, "HAT"),
    }
    assert entries["garbage"].error.startswith("garbage.pth: ")  # the safe loader says what it refused
    assert "not an architecture spandrel recognises" in entries["unknown_arch"].error
    assert "refused to unpickle" in entries["evil"].error
    assert not (data_dir / "pwned.txt").exists()  # the pickle's code never ran


def test_discovery_lists_regular_files_inside_the_folders_only(tmp_path, library):
    models = tmp_path / "models"
    (models / "ESRGAN").mkdir(parents=True)
    outside = tmp_path / "outside.pth"
    torch.save(_esrgan(2).state_dict(), outside)
    (models / "ESRGAN" / "link.pth").symlink_to(outside)
    (models / "ESRGAN" / "notes.txt").write_text("x")
    assert library_for(models).entries() == []
    with pytest.raises(upscaling.UpscaleError, match="not found") as error:
        upscaling.check_name(str(outside), _models(library_for(models)), "upscaler_2")
    assert error.value.field == "upscaler_2"


def test_a_file_dropped_in_or_replaced_is_seen_without_a_restart(tmp_path):
    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    library = library_for(tmp_path / "models")
    assert library.entries() == []
    path = folder / "later.pth"
    torch.save(_esrgan(2).state_dict(), path)
    assert [(e.name, e.scale) for e in library.entries()] == [("later", 2)]
    image = _image(8, 8)
    assert upscaling.upscale(image, 2.0, "later", _models(library)).size == (16, 16)
    torch.save(_esrgan(4).state_dict(), path)
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    assert [(e.name, e.scale) for e in library.entries()] == [("later", 4)]
    out = upscaling.upscale(image, 4.0, "later", _models(library))
    np.testing.assert_array_equal(np.asarray(out), _direct(path, image))


@pytest.mark.parametrize(
    "name, file",
    [
        ("tiny2x", "ESRGAN/tiny2x.pth"),
        ("tiny_compact", "RealESRGAN/tiny_compact.safetensors"),
        ("tiny_swinir", "SwinIR/tiny_swinir.pth"),
        ("tiny_dat", "DAT/tiny_dat.safetensors"),
        ("tiny_hat", "HAT/tiny_hat.pth"),
    ],
)
def test_upscaling_equals_the_spandrel_model_run_directly(library, data_dir, name, file):
    image = _image()
    entry = library.find(name)
    out = upscaling.upscale(image, float(entry.scale), name, _models(library))
    assert out.size == (image.width * entry.scale, image.height * entry.scale)
    np.testing.assert_array_equal(np.asarray(out), _direct(data_dir / "models" / file, image))


def test_new_key_layout_wrapped_in_params_ema_is_the_same_model_as_the_old_layout(library):
    image = _image(seed=4)
    old = upscaling.upscale(image, 4.0, "tiny4x", _models(library))
    new = upscaling.upscale(image, 4.0, "tiny_x4plus", _models(library))
    np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


@pytest.mark.parametrize("name", ["tiny4x", "tiny_swinir"])
def test_tiled_equals_untiled_within_tolerance(library, name):
    image = _image(40, 36, seed=2)
    whole = np.asarray(upscaling.upscale(image, 2.0, name, _models(library)), dtype=np.int16)
    seen = []
    tiled = upscaling.upscale(
        image, 2.0, name, _models(library, tile=16, overlap=4), on_tile=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (9, 9)  # 3 x 3 tiles of 16 with overlap 4 over 40 x 36
    difference = np.abs(np.asarray(tiled, dtype=np.int16) - whole)
    assert difference.mean() < 3.0 and np.median(difference) <= 1
    # the plain Lanczos resize is much further from the model's result: the tiles really ran the model
    lanczos = np.asarray(image.resize(tiled.size, Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(lanczos - whole).mean() > 5 * difference.mean()


def test_4x_model_asked_for_2x_runs_once_then_lanczos_down(library):
    image = _image(seed=5)
    out = upscaling.upscale(image, 2.0, "tiny4x", _models(library))
    assert out.size == (40, 24)
    full = upscaling.upscale(image, 4.0, "tiny4x", _models(library))
    np.testing.assert_array_equal(
        np.asarray(out), np.asarray(full.resize((40, 24), Image.Resampling.LANCZOS))
    )
    assert upscaling.upscale(image, (33, 17), "tiny2x", _models(library)).size == (33, 17)


def test_2x_model_asked_for_4x_runs_twice(library):
    image = _image(10, 8, seed=6)
    once = upscaling.upscale(image, 2.0, "tiny2x", _models(library))
    twice = upscaling.upscale(once, 2.0, "tiny2x", _models(library))
    np.testing.assert_array_equal(
        np.asarray(upscaling.upscale(image, 4.0, "tiny2x", _models(library))), twice
    )


def test_alpha_is_kept_and_interrupt_between_tiles_still_gives_the_size(library):
    image = _image(40, 40, seed=1).convert("RGBA")
    out = upscaling.upscale(image, 2.0, "tiny2x", _models(library))
    assert out.mode == "RGBA" and out.size == (80, 80)
    ctx = JobContext()
    tiles = []

    def stop_after_first(done, total):
        tiles.append(done)
        ctx.interrupt()

    out = upscaling.upscale(
        _image(40, 40), 2.0, "tiny2x", _models(library, tile=16), ctx, on_tile=stop_after_first
    )
    assert tiles == [1] and out.size == (80, 80)


def test_unknown_and_broken_names_are_errors_naming_the_field(library):
    models = _models(library)
    with pytest.raises(upscaling.UpscaleError, match="tiny2x") as error:  # the valid names are listed
        upscaling.upscale(_image(), 2.0, "R-ESRGAN 9x", models, field_name="hr_upscaler")
    assert error.value.field == "hr_upscaler"
    with pytest.raises(upscaling.UpscaleError, match="refused to unpickle"):
        upscaling.upscale(_image(), 2.0, "evil", models)


# --- the API over real HTTP ---


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def server(data_dir, face_model_cache):
    write_tiny_checkpoints(data_dir)
    extra = data_dir / "extra-swinir"
    extra.mkdir()
    torch.save(_swinir().state_dict(), extra / "flagged_swinir.pth")
    install_face_models(face_model_cache, data_dir / "models" / "GFPGAN")  # GFPGAN + the face detector
    sample = Path(__file__).parent / "sample_extensions" / "sample-postprocessing"  # an Extras step
    shutil.copytree(sample, data_dir / "extensions" / "sample-postprocessing")
    flags = [
        "--swinir-models-path",
        str(extra),
        "--codeformer-models-path",
        str(data_dir / "codeformer-flag"),
    ]
    with start_server(data_dir, flags) as running:
        yield running


def test_api_lists_upscalers_in_a1111_shape(server):
    items = requests.get(server.api + "/upscalers", timeout=60).json()
    by_name = {item["name"]: item for item in items}
    assert [item["name"] for item in items[:3]] == ["None", "Lanczos", "Nearest"]
    assert by_name["tiny2x"]["scale"] == 2 and by_name["tiny2x"]["model_name"] == "tiny2x"
    assert by_name["tiny2x"]["model_path"].endswith("models/ESRGAN/tiny2x.pth")
    assert by_name["flagged_swinir"]["scale"] == 2  # the --swinir-models-path folder
    assert set(by_name["tiny_compact"]) >= {"name", "model_name", "model_path", "model_url", "scale"}
    assert by_name["garbage"]["error"] and by_name["tiny2x"]["error"] is None
    realesrgan = requests.get(server.api + "/realesrgan-models", timeout=60).json()
    assert {item["name"] for item in realesrgan} == {"tiny_x4plus", "tiny_compact"}


def test_api_extras_upscale_with_models_and_blend(server, data_dir):
    image = _image()
    body = {"image": _b64(image), "upscaler_1": "tiny2x", "upscaling_resize": 2}
    r = requests.post(server.api + "/extra-single-image", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = np.asarray(_decode(r.json()["image"]).convert("RGB"))
    np.testing.assert_array_equal(out, _direct(data_dir / "models" / "ESRGAN" / "tiny2x.pth", image))
    blend = {**body, "upscaler_2": "Nearest", "extras_upscaler_2_visibility": 0.5}
    r = requests.post(server.api + "/extra-single-image", json=blend, timeout=120)
    nearest = np.asarray(image.resize((40, 24), Image.Resampling.NEAREST), dtype=np.float32)
    expected = (out.astype(np.float32) + nearest) / 2
    assert (
        np.abs(np.asarray(_decode(r.json()["image"]).convert("RGB"), dtype=np.float32) - expected).max() <= 1
    )
    batch = {"imageList": [{"data": _b64(image), "name": "a"}, {"data": _b64(_image(8, 8)), "name": "b"}]}
    r = requests.post(
        server.api + "/extra-batch-images",
        json={
            **batch,
            "upscaler_1": "tiny4x",
            "resize_mode": 1,
            "upscaling_resize_w": 30,
            "upscaling_resize_h": 30,
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert [_decode(i).size for i in r.json()["images"]] == [(30, 30), (30, 30)]  # cropped to the size
    uncropped = {
        **body,
        "resize_mode": 1,
        "upscaling_resize_w": 30,
        "upscaling_resize_h": 30,
        "upscaling_crop": False,
    }
    r = requests.post(server.api + "/extra-single-image", json=uncropped, timeout=120)
    assert _decode(r.json()["image"]).size == (50, 30)  # upscaling_crop false: the 20x12 image's ratio kept


def test_api_tile_settings_have_a1111_names_and_a_range(server):
    options = requests.get(server.api + "/options", timeout=30).json()
    assert (options["ESRGAN_tile"], options["ESRGAN_tile_overlap"]) == (192, 8)
    r = requests.post(server.api + "/options", json={"ESRGAN_tile": 9999}, timeout=30)
    assert r.status_code == 422 and r.json()["field"] == "ESRGAN_tile"
    assert requests.post(server.api + "/options", json={"ESRGAN_tile": 16}, timeout=30).status_code == 200
    image = _image(40, 36, seed=2)  # now tiled: the result stays close to the untiled model's
    body = {"image": _b64(image), "upscaler_1": "tiny2x", "upscaling_resize": 2}
    tiled = requests.post(server.api + "/extra-single-image", json=body, timeout=120).json()["image"]
    assert requests.post(server.api + "/options", json={"ESRGAN_tile": 0}, timeout=30).status_code == 200
    whole = requests.post(server.api + "/extra-single-image", json=body, timeout=120).json()["image"]
    assert tiled != whole  # the setting reached the job
    difference = np.abs(
        np.asarray(_decode(tiled), dtype=np.int16) - np.asarray(_decode(whole), dtype=np.int16)
    )
    assert difference.mean() < 3.0


def test_api_interrupt_stops_an_extras_job_between_tiles_with_the_size_kept(server):
    import threading

    assert requests.post(
        server.api + "/options", json={"ESRGAN_tile": 16, "ESRGAN_tile_overlap": 0}, timeout=30
    ).ok
    body = {"image": _b64(_image(512, 512, seed=9)), "upscaler_1": "tiny2x", "upscaling_resize": 2}
    answers = []
    thread = threading.Thread(
        target=lambda: answers.append(
            requests.post(server.api + "/extra-single-image", json=body, timeout=300)
        )
    )
    thread.start()
    deadline = time.time() + 120
    progress = {}
    while time.time() < deadline and thread.is_alive():
        progress = requests.get(server.api + "/progress", timeout=30).json()["state"]
        if progress["sampling_step"] >= 1:  # tiles are reported as the job's steps
            break
        time.sleep(0.02)
    assert progress["sampling_steps"] == 32 * 32, progress
    assert requests.post(server.api + "/interrupt", timeout=30).json()["interrupted"]
    thread.join(300)
    (interrupted,) = answers
    assert interrupted.status_code == 200 and _decode(interrupted.json()["image"]).size == (1024, 1024)
    complete = requests.post(server.api + "/extra-single-image", json=body, timeout=300).json()["image"]
    assert complete != interrupted.json()["image"]  # the tiles not run kept a plain resize
    assert requests.post(
        server.api + "/options", json={"ESRGAN_tile": 192, "ESRGAN_tile_overlap": 8}, timeout=30
    ).ok


@pytest.mark.parametrize("field", ["upscaler_1", "upscaler_2"])
@pytest.mark.parametrize("name", ["R-ESRGAN 9x", "garbage", "../models/ESRGAN/tiny2x.pth"])
def test_api_unknown_or_broken_upscaler_is_422_naming_the_field(server, field, name):
    body = {"image": _b64(_image()), "upscaler_1": "Lanczos", field: name, "extras_upscaler_2_visibility": 1}
    r = requests.post(server.api + "/extra-single-image", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert name in r.json()["detail"]


# --- extensions' Extras steps (scripts_postprocessing) ---


def test_api_extras_runs_an_extension_postprocessing_step(server):
    image = _image()
    body = {"image": _b64(image), "upscaler_1": "None"}
    r = requests.post(server.api + "/extra-single-image", json=body, timeout=120)
    assert r.status_code == 200 and r.json()["html_info"] == "", r.text  # off by default (its checkbox)
    np.testing.assert_array_equal(np.asarray(_decode(r.json()["image"]).convert("RGB")), np.asarray(image))
    on = {**body, "scripts": {"Posterize": {"enable": True, "bits": 2}}}
    r = requests.post(server.api + "/extra-single-image", json=on, timeout=120)
    assert r.status_code == 200 and r.json()["html_info"] == "Posterize: 2", r.text
    expected = np.asarray(ImageOps.posterize(image, 2))
    np.testing.assert_array_equal(np.asarray(_decode(r.json()["image"]).convert("RGB")), expected)
    batch = {
        "imageList": [{"data": _b64(image), "name": "a"}],
        "scripts": {"Posterize": {"enable": True, "bits": 1}},
    }
    r = requests.post(server.api + "/extra-batch-images", json=batch, timeout=120)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(
        np.asarray(_decode(r.json()["images"][0]).convert("RGB")), np.asarray(ImageOps.posterize(image, 1))
    )


@pytest.mark.parametrize(
    "scripts, field", [({"Sharpen": {}}, "scripts"), ({"Posterize": {"levels": 3}}, "scripts.Posterize")]
)
def test_api_extras_unknown_script_or_argument_is_422(server, scripts, field):
    body = {"image": _b64(_image()), "scripts": scripts}
    r = requests.post(server.api + "/extra-single-image", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


# --- face restoration (GFPGAN / CodeFormer through spandrel, RetinaFace from facexlib) ---


def test_api_face_restorers_in_a1111_shape(server, data_dir):
    items = requests.get(server.api + "/face-restorers", timeout=60).json()
    assert items == [
        {"name": "CodeFormer", "cmd_dir": str(data_dir / "codeformer-flag")},  # --codeformer-models-path
        {"name": "GFPGAN", "cmd_dir": str(data_dir / "models" / "GFPGAN")},
    ]


def _txt2img(server, **fields) -> tuple[Image.Image, str]:
    body = {"prompt": "a face", "steps": 2, "width": 64, "height": 64, "seed": 5, **fields}
    r = requests.post(server.api + "/txt2img", json=body, timeout=600)
    assert r.status_code == 200, r.text
    return _decode(r.json()["images"][0]).convert("RGB"), r.json()["info"]


def test_restore_faces_in_txt2img_and_extras_visibility(server):
    plain, _ = _txt2img(server)
    gfpgan = {"override_settings": {"face_restoration_model": "GFPGAN"}}
    restored, info = _txt2img(server, restore_faces=True, **gfpgan)
    assert "Face restoration: GFPGAN" in info
    changed = (np.asarray(restored, dtype=int) != np.asarray(plain, dtype=int)).any(axis=2)
    assert 0 < changed.sum() < 64 * 64  # the detected face's region only

    def extras(**fields) -> np.ndarray:
        body = {"image": _b64(plain), "upscaler_1": "None", **fields}
        r = requests.post(server.api + "/extra-single-image", json=body, timeout=600)
        assert r.status_code == 200, r.text
        return np.asarray(_decode(r.json()["image"]).convert("RGB"), dtype=np.float32)

    np.testing.assert_array_equal(extras(gfpgan_visibility=0.0), np.asarray(plain))  # 0: the input exactly
    # 0.5: the input blended with the same restoration txt2img's restore_faces gave (one restorer run less)
    half = extras(gfpgan_visibility=0.5)
    full = np.asarray(restored, dtype=np.float32)
    assert np.abs(half - (full + np.asarray(plain, dtype=np.float32)) / 2).max() <= 1
    assert np.abs(half - np.asarray(plain, dtype=np.float32))[changed].mean() > 0  # the face region moved


@pytest.mark.parametrize(
    "fields, field, named",
    [
        ({"codeformer_visibility": 1.0}, "codeformer_visibility", "codeformer"),  # no CodeFormer file
        ({"gfpgan_visibility": 1.5}, "gfpgan_visibility", "between 0 and 1"),
        ({"codeformer_weight": -1}, "codeformer_weight", "between 0 and 1"),
    ],
)
def test_api_extras_face_restoration_bad_input_is_422_naming_the_field(server, fields, field, named):
    r = requests.post(
        server.api + "/extra-single-image", json={"image": _b64(_image()), **fields}, timeout=60
    )
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert named in r.json()["detail"].lower()


def test_api_restore_faces_with_a_missing_file_is_422_naming_it(server):
    body = {"prompt": "x", "steps": 1, "width": 64, "height": 64, "restore_faces": True}
    r = requests.post(server.api + "/txt2img", json=body, timeout=60)  # the default model: CodeFormer
    assert r.status_code == 422 and r.json()["field"] == "restore_faces", r.text
    assert "codeformer-v0.1.0.pth" in r.json()["detail"]
    overrides = {"override_settings": {"face_restoration_model": "RestoreFormer"}}
    r = requests.post(server.api + "/txt2img", json={**body, **overrides}, timeout=60)
    assert r.status_code == 422 and "RestoreFormer" in r.json()["detail"], r.text


def test_missing_detector_names_the_file_and_folders(tmp_path, face_model_cache):
    from sdwebui.engine import face_restoration
    from sdwebui.models.face_restorers import library_for as face_library

    install_face_models(face_model_cache, tmp_path / "models" / "GFPGAN")
    (tmp_path / "models" / "GFPGAN" / "detection_Resnet50_Final.pth").unlink()
    restorers = face_restoration.FaceRestorers(face_library(tmp_path / "models"))
    settings = face_restoration.FaceRestorationSettings(restorers, "GFPGAN")
    with pytest.raises(face_restoration.FaceRestorationError) as error:
        face_restoration.check_available(settings)
    assert "detection_Resnet50_Final.pth" in str(error.value) and str(tmp_path / "models" / "GFPGAN") in str(
        error.value
    )


@pytest.mark.slow
def test_restore_faces_with_codeformer_from_the_flag_folder(server, data_dir):
    path = write_codeformer(data_dir / "codeformer-flag")
    try:
        plain, _ = _txt2img(server)
        restored, info = _txt2img(server, restore_faces=True, override_settings={"code_former_weight": 0.7})
        assert "Face restoration: CodeFormer" in info
        assert (np.asarray(restored) != np.asarray(plain)).any()
        body = {"image": _b64(plain), "codeformer_visibility": 1.0, "codeformer_weight": 0.7}
        r = requests.post(server.api + "/extra-single-image", json=body, timeout=600)
        np.testing.assert_array_equal(
            np.asarray(_decode(r.json()["image"]).convert("RGB")), np.asarray(restored)
        )
    finally:
        path.unlink()


# --- the Extras tab in Chromium ---


@pytest.fixture(scope="module")
def ui_with_upscalers(tmp_path_factory, browser, data_dir):  # browser first: it skips without Chromium
    checkpoint = browser_helpers.write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoints"))
    handle = browser_helpers.start_server(data_dir, checkpoint)
    yield handle
    browser_helpers.stop_server(handle)


@contextlib.contextmanager
def _extras_page(browser, handle):
    """A page of `handle`'s UI with the Extras tab open."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(handle.url + "/")
        page.wait_for_selector("#txt2img_prompt textarea")
        browser_helpers.wait_ui_loaded(page)
        page.click("#tab_extras-button")
        yield page
    finally:
        context.close()


@pytest.mark.browser
def test_extras_tab_upscales_with_a_model_chosen_in_the_dropdown(
    browser, ui_with_upscalers, data_dir, tmp_path
):
    source = tmp_path / "source.png"
    image = _image()
    image.save(source)
    with _extras_page(browser, ui_with_upscalers) as page:
        assert "garbage.pth" in page.inner_text("#extras_broken_upscalers")  # broken files, with the reason
        page.locator("#extras_image input[type=file]").set_input_files(str(source))
        page.wait_for_selector("#extras_image img")
        page.locator("#extras_upscaler_1 input").click()
        page.locator("ul[role=listbox] li[role=option]", has_text="tiny2x").first.click()
        page.click("#extras_generate")
        page.wait_for_function("/saved to|error/i.test(document.querySelector('#extras_status').innerText)")
        assert "40x24" in page.inner_text("#extras_status"), page.inner_text("#extras_status")
    (saved,) = ui_with_upscalers.output_images("extras")
    expected = _direct(data_dir / "models" / "ESRGAN" / "tiny2x.pth", image)
    np.testing.assert_array_equal(np.asarray(Image.open(saved).convert("RGB")), expected)


@pytest.mark.browser
def test_extras_batch_from_directory_writes_each_image_to_the_output_folder(
    browser, ui_with_upscalers, tmp_path
):
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    images = {"a": _image(), "b": _image(8, 6, seed=1)}
    for stem, image in images.items():
        image.save(source / f"{stem}.png")
    (source / "notes.txt").write_text("not an image")
    with _extras_page(browser, ui_with_upscalers) as page:
        page.click("#extras_batch_tab-button")
        page.fill("#extras_batch_input_dir textarea", str(source))
        page.fill("#extras_batch_output_dir textarea", str(target))
        page.locator("#extras_upscaler_1 input").click()
        page.locator("ul[role=listbox] li[role=option]", has_text="tiny2x").first.click()
        page.click("#extras_generate")
        page.wait_for_function("/written|error/i.test(document.querySelector('#extras_status').innerText)")
        assert "2 image(s) written" in page.inner_text("#extras_status"), page.inner_text("#extras_status")
        page.fill("#extras_batch_input_dir textarea", str(tmp_path / "missing"))
        page.click("#extras_generate")
        page.wait_for_function("/does not exist/.test(document.querySelector('#extras_status').innerText)")
    assert sorted(p.name for p in target.iterdir()) == ["a.png", "b.png"]
    for stem, image in images.items():
        expected = _direct(ui_with_upscalers.data_dir / "models" / "ESRGAN" / "tiny2x.pth", image)
        np.testing.assert_array_equal(np.asarray(Image.open(target / f"{stem}.png").convert("RGB")), expected)
