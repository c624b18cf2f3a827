"""The callbacks an extension relies on, seen by a sample extension (tests/sample_extensions/sample-hooks) in
the real app: the real ModelManager on a tiny checkpoint file, driven over real HTTP (`app.py`, one server for
the module), and the real page built by `create_ui` for the component callbacks.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from modules import cmd_args, scripts
from sdwebui.extensions.bridge import attach_extensions
from sdwebui.services import build_services
from tests import tiny_models
from tests.api_server import start_server
from tests.sample_extensions.harness import SAMPLES, reset_scripts

SCRIPT = "Sample hooks"
BASE = {"seed": 11, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler", "cfg_scale": 7}


def data_dir_with_sample(root: Path) -> Path:
    """A data dir with one tiny SD1 checkpoint and the sample-hooks extension installed."""
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    model = tiny_models.tiny_loaded_model("sd1", seed=0)
    tiny_models.write_single_file(model, folder / "hooked.safetensors")
    for sample in ("sample-hooks", "sample-samplers", "sample-conditioning"):
        shutil.copytree(SAMPLES / sample, root / "extensions" / sample)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = data_dir_with_sample(tmp_path_factory.mktemp("hooks-api"))
    with start_server(data_dir, ["--use-cpu", "all"]) as srv:
        yield srv


def post(server, path: str, body: dict) -> dict:
    response = requests.post(server.api + path, json=body, timeout=180)
    assert response.status_code == 200, response.text
    return response.json()


def hooks_log(server) -> dict:
    response = requests.get(server.url + "/sample-hooks/log", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.float32)


def txt2img(server, prompt: str, mode: str = "off") -> np.ndarray:
    body = dict(BASE, prompt=prompt, alwayson_scripts={SCRIPT: {"args": [mode]}})
    return pixels(post(server, "/txt2img", body)["images"][0])


def test_shared_sd_model_and_on_model_loaded_in_the_real_app(server):
    txt2img(server, "a cat")
    titles = [m["title"] for m in requests.get(server.api + "/sd-models", timeout=30).json()]
    (title,) = [t for t in titles if t.startswith("hooked.safetensors [")]  # the one loaded (sorts first)
    log = hooks_log(server)
    assert log["model_loaded"] == [title]  # once, for the start-up load
    assert log["sd_model_in_process"][-1] == title  # shared.sd_model inside a job
    assert requests.post(server.api + "/unload-checkpoint", timeout=60).status_code == 200
    txt2img(server, "a cat")  # loads it again: a new model object, so extensions hear of it
    log = hooks_log(server)
    assert log["model_loaded"] == [title] * 2
    assert log["sd_model_in_process"][-1] == title


def test_cfg_denoiser_can_replace_text_cond(server):
    cat = txt2img(server, "a cat")
    empty = txt2img(server, "")
    assert np.abs(cat - empty).mean() > 1  # the prompt matters on this model
    swapped = txt2img(server, "a cat", mode="uncond as cond")  # text_cond := text_uncond (the "" prompt)
    assert np.abs(swapped - empty).max() <= 1


# --- A1111's sampler objects: combine_denoised overridden, callback_state wrapped (sample-samplers) ---


def generate(server, prompt: str, seed: int = 11, **scripts_args) -> tuple[np.ndarray, str]:
    body = dict(
        BASE, prompt=prompt, seed=seed, alwayson_scripts={k: {"args": v} for k, v in scripts_args.items()}
    )
    answer = post(server, "/txt2img", body)
    return pixels(answer["images"][0]), answer["info"]


def test_an_overridden_combine_denoised_makes_the_guidance(server):
    guide = "Sample guidance"
    cat, _ = generate(server, "a cat")
    empty, _ = generate(server, "")
    # guidance by the extension's CFGDenoiser subclass: the uncond estimate alone, i.e. the "" prompt's image
    uncond_only, info = generate(server, "a cat", **{guide: ["uncond only", 1.0]})
    assert np.abs(uncond_only - empty).max() <= 1 and np.abs(uncond_only - cat).mean() > 1
    assert "Sample guidance: uncond only" in info and "Sample guidance steps: 0/3 .. 2/3 (3)" in info
    assert '"Euler"' in info or "Sampler: Euler," in info  # the job ran its own sampler
    # A1111's combine_denoised (super) over the engine's estimates: the same image as the engine's guidance
    loose, _ = generate(server, "a cat", **{guide: ["clamp", 1e6]})
    assert np.abs(loose - cat).max() <= 1
    clamped, _ = generate(server, "a cat", **{guide: ["clamp", 0.05]})
    assert np.abs(clamped - cat).mean() > 1
    from modules import sd_samplers

    assert not [n for n in sd_samplers.all_samplers_map if "_sampleguidance" in n]  # removed after the batch


def test_xyz_plot_is_found_by_its_module_name_and_takes_extension_axes(real_app):
    from webui.layout import create_ui

    services, _ = real_app
    create_ui(services)  # on_before_ui: the sample adds its axis there, as dynamic thresholding does
    (xyz,) = [x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"]  # A1111's name
    labels = [a.label for a in xyz.module.axes_for_tab(False)]
    assert labels.count("[Sample] Guidance clamp") == 1 and labels[-1] == "[Sample] Guidance clamp"


def test_script_info_lists_a_callable_value_by_what_it_returns(server):
    response = requests.get(server.api + "/script-info", timeout=60)
    assert response.status_code == 200, response.text
    (entry,) = [s for s in response.json() if s["name"] == "sample guidance" and not s["is_img2img"]]
    assert [a["value"] for a in entry["args"]] == ["off", 1.0]


def test_a_wrapped_callback_state_sees_and_changes_every_step(server):
    step = "Sample color step"
    plain, _ = generate(server, "a cat")
    unchanged, _ = generate(server, "a cat", **{step: ["unchanged", 0.0]})
    assert np.array_equal(unchanged, plain)  # called every step; what it leaves alone stays exactly so
    seen = requests.get(server.url + "/sample-samplers/log", timeout=30).json()
    assert [s[0] for s in seen] == [0, 1, 2]  # d["i"] per step
    assert all(s[1] == ["denoised", "i", "sigma", "sigma_hat", "x"] and s[2] == [1, 4, 8, 8] for s in seen)
    assert seen[0][3] > seen[1][3] > seen[2][3] > 0 and seen[0][4] == 3  # sigmas fall; self.p is the job's
    shifted, _ = generate(server, "a cat", **{step: ["shift x", 0.5]})  # d["x"] edited in place
    assert np.abs(shifted - plain).mean() > 1
    # the last step's denoised set to zeros: the step lands there, so two seeds give one image
    flat_a, _ = generate(server, "a cat", seed=1, **{step: ["flat denoised", 0.0]})
    flat_b, _ = generate(server, "a cat", seed=2, **{step: ["flat denoised", 0.0]})
    assert np.abs(flat_a - flat_b).max() <= 1 and np.abs(flat_a - plain).mean() > 1


# --- prompt_parser.get_learned_conditioning replaced by an extension (sample-conditioning) ---


def conditioning_mode(server, mode: str, factor: float = 1.0) -> None:
    answer = requests.post(
        server.url + "/sample-conditioning/mode", params={"mode": mode, "factor": factor}, timeout=30
    )
    assert answer.status_code == 200, answer.text


def test_a_replaced_get_learned_conditioning_makes_the_conditioning(server):
    prompt = "[a cat:a dog:1]"  # prompt editing: two conds, the first for step 1
    log = server.url + "/sample-conditioning/log"
    conditioning_mode(server, "unwrapped")  # as without the extension: the engine's own path
    plain, _ = generate(server, prompt)
    try:
        conditioning_mode(server, "record")
        recorded, _ = generate(server, prompt)
        calls = requests.get(log, timeout=30).json()
        conditioning_mode(server, "scale", 0.0)
        scaled, _ = generate(server, prompt)
    finally:
        conditioning_mode(server, "unwrapped")
    assert np.abs(recorded - plain).max() <= 1  # its pass-through wrapper: the engine's conditioning
    assert np.abs(scaled - plain).mean() > 1  # what the wrapper returns is what the job samples with
    negative, positive = calls  # A1111's order: the negative prompts, then the prompts' AND parts
    assert negative["prompts"] == [""] and negative["negative"] and negative["ends"] == [[3]]
    assert positive["prompts"] == [prompt] and not positive["negative"] and positive["ends"] == [[1, 3]]
    for call in calls:
        assert call["steps"] == 3 and call["args"] == [None, False] and call["size"] == [64, 64]
        assert call["cond_shape"] == [77, 32] and call["empty_shape"] == [1, 77, 32]


def test_scripts_lists_alwayson_scripts_as_a1111(server):
    listed = requests.get(server.api + "/scripts", timeout=30).json()
    assert set(listed) == {"txt2img", "img2img"}
    for kind in ("txt2img", "img2img"):
        assert "sample hooks" in listed[kind]  # AlwaysVisible, listed by its lowercased title
        assert {"x/y/z plot", "prompts from file or textbox"} <= set(listed[kind])


def img2img_body(mode: str, extra: float) -> dict:
    init = Image.fromarray(np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8))
    buffer = io.BytesIO()
    init.save(buffer, format="PNG")
    return dict(BASE, prompt="a cat", init_images=[base64.b64encode(buffer.getvalue()).decode()],
                denoising_strength=0.6, override_settings={"img2img_extra_noise": extra},
                alwayson_scripts={SCRIPT: {"args": [mode]}})  # fmt: skip


def test_on_extra_noise_sees_and_replaces_img2img_extra_noise(server):
    def img2img(mode: str, extra: float) -> tuple[np.ndarray, str]:
        answer = post(server, "/img2img", img2img_body(mode, extra))
        return pixels(answer["images"][0]), answer["info"]

    plain, plain_info = img2img("off", 0.0)
    assert hooks_log(server)["extra_noise"] == []  # 0 = no extra noise, no call (A1111)
    noisy, noisy_info = img2img("off", 0.5)
    assert np.abs(noisy - plain).mean() > 1 and "Extra noise: 0.5" in noisy_info
    assert "Extra noise" not in plain_info
    (call,) = hooks_log(server)["extra_noise"]  # noise, x (init latents), xi (noised): one latent shape
    assert call[0] == call[1] == call[2] and call[0][:2] == [1, 4]
    zeroed, _ = img2img("no extra noise", 0.5)  # the callback's noise is the one added: zeros
    assert np.abs(zeroed - plain).max() <= 1


def test_bad_extra_noise_setting_is_a_4xx_naming_it(server):
    response = requests.post(server.api + "/img2img", json=img2img_body("off", -1.0), timeout=60)
    assert 400 <= response.status_code < 500 and "img2img_extra_noise" in response.text


# --- the component callbacks, while the real page is built ---


@pytest.fixture
def real_app(tmp_path):
    data_dir = data_dir_with_sample(tmp_path / "data")
    args = cmd_args.parse_args(["--data-dir", str(data_dir), "--use-cpu", "all"])
    services = build_services(args)  # the real ModelManager, no double
    system = attach_extensions(services)
    yield services, system
    services.jobs.shutdown()
    reset_scripts()


def probe_log() -> dict:
    module = next(m for path, m in scripts.loaded_modules.items() if path.endswith("hooks_probe.py"))
    return module.LOG


def test_component_callbacks_around_every_block_of_the_page(real_app):
    from webui.layout import create_ui

    services, system = real_app
    demo = create_ui(services)
    log = probe_log()
    before, after = log["before_component"], log["after_component"]
    for elem_id in ("txt2img_prompt", "txt2img_generate", "img2img_prompt", "tab_settings", "txt2img_toprow"):
        assert before.count(elem_id) == 1 and after.count(elem_id) == 1, elem_id
    assert log["after_prompt_label"] == "Prompt"  # after: the component is fully built
    # what the callbacks built sits right before / after the prompt, in the page the browser gets
    column = next(b for b in demo.blocks.values() if b.elem_id == "txt2img_prompt_container")
    # (Gradio wraps form components in a Form block of its own; name it by what it holds)
    siblings = [b.elem_id or b.children[0].elem_id for b in column.children]
    assert siblings[:3] == ["sample_hooks_before_prompt", "txt2img_prompt", "sample_hooks_after_prompt"]
    layout_ids = _layout_ids(demo.config["layout"])
    assert all(
        b._id in layout_ids
        for b in demo.blocks.values()
        if b.elem_id and b.elem_id.startswith("sample_hooks")
    )
    # the tab's scripts see their own tab's components (A1111 scripts_current)
    assert "txt2img_prompt" in log["script_after_component"]["txt2img"]
    assert "img2img_prompt" not in log["script_after_component"]["txt2img"]
    assert "img2img_prompt" in log["script_after_component"]["img2img"]
    assert log["on_after_generate"] == ["txt2img_generate"]  # Script.on_after_component(elem_id=...)
    # an on_ui_tabs tab's components (its Blocks is built before the page) get the calls too, once each
    for elem_id in ("sample_hooks_tab_column", "sample_hooks_tab_box"):
        assert before.count(elem_id) == 1 and after.count(elem_id) == 1, elem_id
    assert before.index("sample_hooks_tab_column") < before.index("sample_hooks_tab_box")
    assert log["after_tab_box_label"] == "Tab box"
    tab_column = next(b for b in demo.blocks.values() if b.elem_id == "sample_hooks_tab_column")
    (form,) = tab_column.children  # Gradio's Form around the column's form components
    assert [b.elem_id for b in form.children] == [
        "sample_hooks_before_tab_box", "sample_hooks_tab_box", "sample_hooks_after_tab_box"
    ]  # fmt: skip

    system.reload()  # "Apply and restart UI"
    assert log["before_reload"] == 1


def _layout_ids(node: dict) -> set[int]:
    ids = {node["id"]}
    for child in node.get("children", []):
        ids |= _layout_ids(child)
    return ids


def test_blocks_built_by_component_callbacks_nest_and_keep_their_place():
    import gradio as gr

    from modules import script_callbacks
    from sdwebui.extensions.component_hooks import observe

    seen = []

    def before(component, **kwargs):
        seen.append(("before", kwargs.get("elem_id")))
        if kwargs.get("elem_id") == "b":
            with gr.Row(elem_id="row_before_b"):
                gr.Button(elem_id="in_row")

    def after(component, **kwargs):
        seen.append(("after", kwargs.get("elem_id")))
        if kwargs.get("elem_id") == "col":
            gr.HTML(elem_id="after_col")

    script_callbacks.on_before_component(before)
    script_callbacks.on_after_component(after)
    try:
        with gr.Blocks() as demo, observe(demo):
            with gr.Column(elem_id="col"):
                gr.Button("a", elem_id="a")
                gr.Button("b", elem_id="b")
            gr.Button("c", elem_id="c")
    finally:
        script_callbacks.remove_callbacks_for_function(before)
        script_callbacks.remove_callbacks_for_function(after)
    assert [b.elem_id for b in demo.children] == ["col", "after_col", "c"]
    column = demo.children[0]
    assert [b.elem_id for b in column.children] == ["a", "row_before_b", "b"]
    assert [b.elem_id for b in column.children[1].children] == ["in_row"]
    # a layout block's "after" comes once its constructor returned, before what it holds (as A1111)
    assert seen[:2] == [("before", "col"), ("after", "col")]
    assert seen.index(("after", "in_row")) < seen.index(("after", "b"))
    assert [s for s in seen if s[1] == "c"] == [("before", "c"), ("after", "c")]  # the last block, too
    assert type(demo.blocks) is dict  # Gradio's own mapping again once built
