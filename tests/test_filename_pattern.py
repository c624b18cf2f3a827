"""A1111 file-name patterns and the saving settings: tags, sanitizing, no escape from the folder, umask."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from sdwebui.outputs.filename_pattern import FilenameFields, expand, unknown_tags
from sdwebui.outputs.image_saving import save_image
from sdwebui.outputs.infotext import read_infotext

NOW = dt.datetime(2024, 3, 9, 14, 5, 6)
INFOTEXT = "a red cube\nSteps: 3, Sampler: Euler a, Seed: 777, Size: 64x64"


def _fields(**changes) -> FilenameFields:
    values = dict(
        seed=777,
        prompt="a red cube, best, 8k",
        prompt_no_styles="a red cube",
        negative_prompt="blurry",
        styles=["best"],
        steps=3,
        cfg_scale=6.5,
        width=64,
        height=48,
        sampler="DPM++ 2M",
        model_name="alpha",
        model_hash="0123456789",
        job_timestamp=dt.datetime(2024, 3, 9, 14, 0, 0),
    )
    values.update(changes)
    return FilenameFields(**values)


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("[seed]-[prompt_words]", "777-a red cube best 8k"),
        ("[prompt]", "a_red_cube,_best,_8k"),
        ("[prompt_spaces]", "a red cube, best, 8k"),
        ("[prompt_no_styles]", "a_red_cube"),
        ("[steps]-[cfg]-[sampler]", "3-6.5-DPM++ 2M"),
        ("[model_name]-[model_hash]", "alpha-0123456789"),
        ("[width]x[height]", "64x48"),
        ("[date]", "2024-03-09"),
        ("[datetime]", "20240309140506"),
        ("[datetime<%Y>]", "2024"),
        ("[job_timestamp]", "20240309140000"),
        ("[styles]", "best"),
        ("[seed]-[batch_number]", "777"),  # batch size 1: nothing, and the "-" before it goes too
        ("[seed]-[generation_number]", "777"),
        ("[SEED]", "777"),  # tags are case-insensitive, as in A1111
        ("[none]", ""),
    ],
)
def test_tags(pattern, expected):
    assert expand(pattern, _fields(), NOW) == expected


def test_batch_and_generation_numbers_of_a_batch():
    fields = _fields(batch_index=1, batch_size=2, iteration=2, n_iter=3)
    assert expand("[seed]-[batch_number]-[generation_number]", fields, NOW) == "777-2-6"


@pytest.mark.parametrize(
    "pattern, prompt",
    [
        ("../../[seed]", "x"),
        ("/etc/[seed]", "x"),
        ("[prompt_spaces]", "../../../../tmp/evil"),
        ("[prompt]", "..\\..\\win"),
        ("[prompt_words]", "a\x00b\nc"),
    ],
)
def test_a_pattern_never_leaves_the_folder(tmp_path, pattern, prompt):
    folder = tmp_path / "out"
    path = save_image(
        Image.new("RGB", (8, 8)), folder, 1, None, filename_pattern=pattern, fields=_fields(prompt=prompt)
    )
    assert path.parent == folder and path.exists()
    assert "/" not in path.name and "\\" not in path.name and not path.name.startswith(".")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_long_prompts_fit_in_a_file_name(tmp_path):
    fields = _fields(prompt="猫 " * 400)
    path = save_image(
        Image.new("RGB", (8, 8)), tmp_path, 1, None, filename_pattern="[prompt][prompt]", fields=fields
    )
    assert len(path.name.encode()) <= 255 and path.exists()


def test_unknown_tags_are_listed():
    assert unknown_tags("[seed]-[lora]-[Prompt_Words]-[x<1>]") == ["lora", "x"]


def test_without_number_the_name_is_the_pattern_and_never_overwrites(tmp_path):
    first = save_image(Image.new("RGB", (8, 8)), tmp_path, 5, None, "png", "[seed]", add_number=False)
    second = save_image(Image.new("RGB", (8, 8)), tmp_path, 5, None, "png", "[seed]", add_number=False)
    assert (first.name, second.name) == ("5.png", "5-1.png")
    # an empty decoration still gets a number rather than the name ".png" ("5.png" counts as number 5)
    empty = save_image(Image.new("RGB", (8, 8)), tmp_path, 5, None, "png", "", add_number=False)
    assert empty.name == "00006.png"


@pytest.mark.parametrize("extension", ["jpg", "jpeg", "webp", "png"])
def test_formats_carry_the_infotext_as_a1111(tmp_path, extension):
    path = save_image(Image.new("RGBA", (8, 8), (200, 0, 0, 255)), tmp_path, 3, INFOTEXT, extension)
    assert path.suffix == f".{extension}"
    with Image.open(path) as image:
        assert image.format == {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}[extension]
        assert read_infotext(image) == INFOTEXT
        if extension != "png":  # EXIF UserComment, UTF-16 with the "UNICODE" prefix as piexif writes it
            raw = image.getexif().get_ifd(0x8769)[0x9286]
            assert raw.startswith(b"UNICODE\x00") and raw[8:].decode("utf-16-be") == INFOTEXT


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_image(Image.new("RGB", (8, 8)), tmp_path, 1, INFOTEXT)
        os.umask(0o077)
        private = save_image(Image.new("RGB", (8, 8)), tmp_path, 2, INFOTEXT)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_an_extensions_save_uses_the_pattern_with_its_prompt_and_p(tmp_path):
    from types import SimpleNamespace

    from modules import images, shared

    before = shared.opts.get("samples_filename_pattern")
    shared.opts.set("samples_filename_pattern", "[seed]-[prompt_words]-[steps]-[sampler]")
    try:
        p = SimpleNamespace(prompt="ignored", steps=4, sampler_name="Euler a", batch_size=1, n_iter=1)
        path, _ = images.save_image(
            Image.new("RGB", (8, 8)), str(tmp_path), "", seed=9, prompt="a red cube", p=p
        )
    finally:
        shared.opts.set("samples_filename_pattern", before)
    assert Path(path).name == "00000-9-a red cube-4-Euler a.png"
