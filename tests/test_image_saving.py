import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from sdwebui.outputs.image_saving import dated_output_dir, next_sequence_number, save_image
from sdwebui.outputs.infotext import read_infotext

INFOTEXT = "a cat, 猫\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 7, Size: 64x64"


def _image(value=10):
    return Image.new("RGB", (16, 12), (value % 256, 20, 30))


def test_numbered_names_and_infotext(tmp_path):
    first = save_image(_image(), tmp_path, 7, INFOTEXT)
    second = save_image(_image(), tmp_path, 1234, None)
    assert first.name == "00000-7.png"
    assert second.name == "00001-1234.png"
    with Image.open(first) as image:
        assert image.size == (16, 12)
        assert image.getpixel((0, 0)) == (10, 20, 30)
        assert read_infotext(image) == INFOTEXT
    with Image.open(second) as image:
        assert read_infotext(image) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000-7.png",
        "00001-1234.png",
    ]  # no temp/lock left


def test_continues_after_highest_existing_number(tmp_path):
    (tmp_path / "00041-99.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not numbered")
    assert next_sequence_number(tmp_path) == 42
    assert save_image(_image(), tmp_path, 5, INFOTEXT).name == "00042-5.png"
    assert (tmp_path / "00041-99.png").read_bytes() == b"x"


def test_never_overwrites_even_with_same_seed(tmp_path):
    paths = [save_image(_image(i), tmp_path, 5, INFOTEXT) for i in range(3)]
    assert [p.name for p in paths] == ["00000-5.png", "00001-5.png", "00002-5.png"]


def test_concurrent_writers_get_distinct_numbers(tmp_path):
    barrier = threading.Barrier(8)

    def write(i):
        barrier.wait()
        return save_image(_image(i), tmp_path, 1000 + i % 3, f"prompt {i}\nSteps: 1, Seed: {i}, Size: 16x12")

    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(write, range(40)))
    assert len(set(paths)) == 40
    numbers = sorted(int(p.name.split("-")[0]) for p in paths)
    assert numbers == list(range(40))
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            image.load()
            assert image.getpixel((0, 0))[0] == i
            assert read_infotext(image) == f"prompt {i}\nSteps: 1, Seed: {i}, Size: 16x12"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("extension", ["jpg", "webp"])
def test_other_formats_keep_infotext(tmp_path, extension):
    rgba = Image.new("RGBA", (16, 16), (200, 10, 10, 255))
    path = save_image(rgba, tmp_path, 3, INFOTEXT, extension=extension)
    assert path.name == f"00000-3.{extension}"
    with Image.open(path) as image:
        assert read_infotext(image) == INFOTEXT
        assert image.getpixel((8, 8))[0] > 150


def test_filename_patterns(tmp_path):
    assert save_image(_image(), tmp_path, 9, None, filename_pattern="").name == "00000.png"
    today = dt.date.today().strftime("%Y-%m-%d")
    assert (
        save_image(_image(), tmp_path, 9, None, filename_pattern="[seed]-[date]").name
        == f"00001-9-{today}.png"
    )
    assert save_image(_image(), tmp_path, 9, None, filename_pattern='a/b:"c"').name == "00002-a_b__c_.png"
    # an unknown tag is kept as written (A1111); the settings refuse one (tests/test_settings_files.py)
    assert save_image(_image(), tmp_path, 9, None, filename_pattern="[nope]").name == "00003-[nope].png"
    with pytest.raises(ValueError, match="unsupported image format 'gif'"):
        save_image(_image(), tmp_path, 9, None, extension="gif")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stale_lock_is_skipped(tmp_path):
    (tmp_path / ".00000.lock").write_text("")
    assert save_image(_image(), tmp_path, 1, None).name == "00001-1.png"


def test_dated_output_dir(tmp_path):
    path = dated_output_dir(tmp_path, "txt2img", dt.date(2024, 3, 9))
    assert path == tmp_path / "txt2img-images" / "2024-03-09"
    assert path.is_dir()
    assert dated_output_dir(tmp_path, "txt2img-grids", dt.date(2024, 3, 9)).parent.name == "txt2img-grids"
    assert dated_output_dir(tmp_path, "img2img").parent.name == "img2img-images"
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="plain folder name"):
            dated_output_dir(tmp_path, bad)
