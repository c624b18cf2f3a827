"""LoRA tags through the features that rewrite or restore prompts: X/Y/Z plot's Prompt S/R replacing text
inside a tag (each cell gets its own networks through the job's lease), and PNG Info's paste reading the
tags back out of a cell's infotext (what PNG Info -> txt2img sends to the prompt box)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.lora_fixtures import save_safetensors
from tests.sample_extensions.harness import generate, make_app, reset_scripts
from tests.test_extensions_builtin import xyz_args
from tests.test_lora import lora_tensors
from tests.tiny_models import tiny_loaded_model
from webui import paste


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One app for the module (extensions attached as app.py does), with the LoRA "style"."""
    data = tmp_path_factory.mktemp("lora-prompts") / "data"
    save_safetensors(lora_tensors(), data / "models" / "Lora" / "style.safetensors")
    services, _ = make_app(data, tiny_loaded_model("sd1"))
    yield services
    services.jobs.shutdown()
    reset_scripts()


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_prompt_sr_inside_lora_tags_and_pasting_them_back(app):
    args = xyz_args(x_type="Prompt S/R", x_values="style:1, style:0", include_lone_images=True)
    request = {"prompt": "a cube <lora:style:1>", "batch_size": 1}
    grid = generate(app, request=request, script_name="X/Y/Z plot", script_args=args)
    cells, infotexts = grid.pil_images[1:], grid.infotexts[1:]
    assert [t.split("\n")[0] for t in infotexts] == ["a cube <lora:style:1>", "a cube <lora:style:0>"]
    assert 'Lora hashes: "style: ' in infotexts[0]
    plain = generate(app, request={"prompt": "a cube", "batch_size": 1})
    with_lora = generate(app, request=request)
    assert np.array_equal(pixels(cells[1]), pixels(plain.pil_images[0]))  # weight 0: as without
    assert np.array_equal(pixels(cells[0]), pixels(with_lora.pil_images[0]))
    assert not np.array_equal(pixels(cells[0]), pixels(cells[1]))

    pasted = paste.pasted_params(infotexts[0])  # the text PNG Info shows and sends to txt2img
    assert pasted["Prompt"] == "a cube <lora:style:1>"
    assert pasted["Lora hashes"].startswith("style: ")


def test_a_tag_inside_prompt_editing_is_taken_out_before_the_schedule(app):
    """A1111 removes the tags before parsing `[from:to:when]`: a tag inside the brackets applies and the
    edit still switches at its step."""
    inside = generate(
        app, request={"prompt": "a [cube <lora:style:1>:ball:0.5]", "batch_size": 1, "steps": 4}
    )
    outside = generate(
        app, request={"prompt": "a [cube :ball:0.5] <lora:style:1>", "batch_size": 1, "steps": 4}
    )
    no_edit = generate(app, request={"prompt": "a cube <lora:style:1>", "batch_size": 1, "steps": 4})
    assert np.array_equal(pixels(inside.pil_images[0]), pixels(outside.pil_images[0]))
    assert not np.array_equal(pixels(inside.pil_images[0]), pixels(no_edit.pil_images[0]))
    assert inside.infotexts[0].startswith("a [cube <lora:style:1>:ball:0.5]\n")
