"""The A1111 public module surface: `modules/` holds exactly the documented names, each forwarding to its
implementation with the attributes extensions import; the new facade modules behave as A1111's; and a sample
extension that uses every one of them runs in the real app over real HTTP."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from PIL import Image

from sdwebui.config import paths as config_paths
from sdwebui.extensions.manager import ExtensionManager
from sdwebui.facade import shared as facade_shared
from sdwebui.jobs.managed_models import ManagedModels
from sdwebui.models.manager import ModelManager
from tests import tiny_models
from tests.api_server import start_server
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).parent / "sample_extensions" / "sample-surface"

# The public modules (the same list as modules/__init__.py and docs/extensions.md) and, for each, the
# names extensions import from it.
SURFACE: dict[str, set[str]] = {
    "call_queue": {"wrap_queued_call", "wrap_gradio_gpu_call", "wrap_gradio_call", "queue_lock"},
    "cmd_args": {"build_parser", "parse_args"},
    "devices": {
        "device",
        "dtype",
        "cpu",
        "get_optimal_device",
        "torch_gc",
        "autocast",
        "without_autocast",
        "cond_cast_unet",
        "NansException",
    },  # fmt: skip
    "errors": {"report", "display", "display_once", "print_error_explanation", "run", "get_exceptions"},
    "extensions": {
        "extensions",
        "active",
        "Extension",
        "list_extensions",
        "find_extension",
        "extensions_dir",
        "extensions_builtin_dir",
    },  # fmt: skip
    "extra_networks": {
        "ExtraNetwork",
        "ExtraNetworkParams",
        "register_extra_network",
        "register_extra_network_alias",
        "parse_prompt",
        "parse_prompts",
        "activate",
        "deactivate",
        "lookup_extra_networks",
        "extra_network_registry",
    },  # fmt: skip
    "generation_parameters_copypaste": {
        "parse_generation_parameters",
        "create_buttons",
        "bind_buttons",
        "register_paste_params_button",
        "ParamBinding",
        "image_from_url_text",
    },  # fmt: skip
    "images": {
        "save_image",
        "image_grid",
        "read_info_from_image",
        "resize_image",
        "GridAnnotation",
        "draw_grid_annotations",
        "sanitize_filename_part",
        "flatten",
    },  # fmt: skip
    "infotext_utils": {
        "parse_generation_parameters",
        "create_buttons",
        "bind_buttons",
        "ParamBinding",
        "register_paste_params_button",
        "paste_fields",
        "quote",
        "unquote",
    },  # fmt: skip
    "masking": {"get_crop_region", "expand_crop_region", "fill"},
    "cache": {"cache", "dump_cache", "cached_data_for_file"},
    "extras": {"run_pnginfo"},
    "img2img": {"process_batch"},
    "hashes": {"sha256", "sha256_from_cache", "calculate_sha256", "addnet_hash_safetensors"},
    "launch_utils": {
        "is_installed",
        "run_pip",
        "run",
        "git_tag",
        "commit_hash",
        "args",
        "python",
        "requirements_met",
    },
    "modelloader": {"load_file_from_url", "load_models", "friendly_name", "load_upscalers"},
    "safe": {"load", "unsafe_torch_load", "Extra"},
    "sd_hijack": {"model_hijack", "StableDiffusionModelHijack", "EmbeddingDatabase"},
    "sd_samplers_common": {
        "InterruptedException",
        "SamplerData",
        "samples_to_images_tensor",
        "images_tensor_to_samples",
        "sample_to_image",
        "setup_img2img_steps",
    },
    "shared_items": {
        "list_checkpoint_tiles",
        "refresh_checkpoints",
        "sd_vae_items",
        "refresh_vae_list",
        "list_samplers",
        "ui_reorder_categories",
    },
    "timer": {"Timer", "startup_timer"},
    "ui": {
        "gr_show",
        "create_refresh_button",
        "plaintext_to_html",
        "create_output_panel",
        "versions_html",
        "ToolButton",
        "save_style_symbol",
        "refresh_symbol",
        "apply_style_symbol",
        "clear_prompt_symbol",
        "switch_values_symbol",
        "detect_image_size_symbol",
        "paste_symbol",
    },
    "ui_common": {
        "save_files",
        "plaintext_to_html",
        "create_refresh_button",
        "create_output_panel",
        "folder_symbol",
        "refresh_symbol",
    },
    "upscaler": {"Upscaler", "UpscalerData", "UpscalerNone", "UpscalerLanczos", "UpscalerNearest"},
    "paths": {"script_path", "data_path", "models_path", "extensions_dir", "extensions_builtin_dir"},
    "paths_internal": {
        "script_path",
        "data_path",
        "models_path",
        "extensions_dir",
        "extensions_builtin_dir",
        "sd_configs_path",
        "sd_default_config",
        "sd_model_file",
        "default_sd_model_file",
    },  # fmt: skip
    "processing": {
        "StableDiffusionProcessing",
        "StableDiffusionProcessingTxt2Img",
        "StableDiffusionProcessingImg2Img",
        "Processed",
        "process_images",
        "create_infotext",
        "fix_seed",
        "get_fixed_seed",
        "opt_f",
        "opt_C",
        "create_binary_mask",
        "create_random_tensors",
        "process_images_inner",
    },  # fmt: skip
    "prompt_parser": {
        "parse_prompt_attention",
        "get_learned_conditioning_prompt_schedules",
        "get_multicond_prompt_list",
        "ScheduledPromptConditioning",
        "ComposableScheduledPromptConditioning",
        "MulticondLearnedConditioning",
        "SdConditioning",
        "get_learned_conditioning",
        "get_multicond_learned_conditioning",
        "reconstruct_cond_batch",
    },  # fmt: skip
    "rng": {"ImageRNG", "randn", "slerp"},
    "script_callbacks": {
        "on_app_started",
        "on_model_loaded",
        "on_ui_tabs",
        "on_ui_settings",
        "on_cfg_denoiser",
        "on_before_image_saved",
        "on_image_saved",
        "on_script_unloaded",
        "on_before_ui",
        "remove_current_script_callbacks",
        "ImageSaveParams",
        "CFGDenoiserParams",
    },  # fmt: skip
    "scripts": {
        "Script",
        "AlwaysVisible",
        "basedir",
        "PostprocessImageArgs",
        "scripts_txt2img",
        "scripts_img2img",
        "scripts_data",
        "postprocessing_scripts_data",
        "ScriptFile",
    },  # fmt: skip
    "scripts_postprocessing": {"ScriptPostprocessing", "PostprocessedImage"},
    "sd_models": {
        "CheckpointInfo",
        "checkpoints_list",
        "checkpoint_aliases",
        "list_models",
        "get_closet_checkpoint_match",
        "select_checkpoint",
        "model_hash",
        "reload_model_weights",
        "load_model",
        "unload_model_weights",
        "checkpoint_tiles",
        "model_data",
    },  # fmt: skip
    "sd_samplers": {
        "all_samplers",
        "all_samplers_map",
        "samplers",
        "visible_sampler_names",
        "create_sampler",
    },
    "sd_samplers_kdiffusion": {
        "KDiffusionSampler",
        "CFGDenoiser",
        "CFGDenoiserKDiffusion",
        "samplers_k_diffusion",
    },
    "sd_samplers_cfg_denoiser": {"CFGDenoiser"},
    "sd_samplers_compvis": {"VanillaStableDiffusionSampler", "samplers_data_compvis"},
    "sd_vae": {
        "vae_dict",
        "base_vae",
        "loaded_vae_file",
        "refresh_vae_list",
        "reload_vae_weights",
        "unspecified",
    },  # fmt: skip
    "shared": {
        "opts",
        "cmd_opts",
        "state",
        "sd_model",
        "OptionInfo",
        "options_section",
        "models_path",
        "script_path",
        "data_path",
        "total_tqdm",
        "prompt_styles",
        "demo",
        "sd_upscalers",
        "batch_cond_uncond",
        "walk_files",
        "listfiles",
        "config_filename",
        "ui_config_file",
        "hide_dirs",
    },  # fmt: skip
    "shared_state": {"State"},
    "styles": {"StyleDatabase", "PromptStyle", "merge_prompts"},
    "ui_components": {"ToolButton", "FormRow", "FormColumn", "FormGroup", "InputAccordion", "DropdownMulti"},
}


def test_modules_holds_exactly_the_documented_names():
    files = {p.stem for p in (REPO / "modules").glob("*.py") if p.stem != "__init__"}
    assert files == set(SURFACE)
    assert not [p for p in (REPO / "modules").iterdir() if p.is_dir() and p.name != "__pycache__"]
    docstring = importlib.import_module("modules").__doc__
    listed = docstring.split("Public modules")[1].split(":", 1)[1].split("\n\n")[0]
    assert {n.strip(" .\n") for n in listed.split(",")} == set(SURFACE)
    docs = (REPO / "docs" / "extensions.md").read_text()
    assert all(f"`modules.{name}`" in docs for name in SURFACE)


def test_public_modules_are_attributes_of_the_package():
    # adetailer: `import modules` then `modules.shared_items.sd_vae_items()`, in a fresh interpreter
    code = (
        "import modules; assert callable(modules.shared_items.sd_vae_items)\n"
        "try:\n    modules.no_such_module\nexcept AttributeError as e:\n    print(e)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no attribute 'no_such_module'" in done.stdout


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_each_module_forwards_and_has_what_extensions_import(name):
    module = importlib.import_module(f"modules.{name}")
    assert module.__name__.startswith("sdwebui."), module.__name__  # the implementation, not a copy
    assert sys.modules[f"modules.{name}"] is module
    missing = {attr for attr in SURFACE[name] if not hasattr(module, attr)}
    assert not missing, f"modules.{name} lacks {sorted(missing)}"


# --- extra_networks ---------------------------------------------------------------------------------------
class Recorder:
    def __init__(self, name, calls, fail=False):
        self.name, self.calls, self.fail = name, calls, fail

    def activate(self, p, params_list):
        if self.fail:
            raise RuntimeError("broken network")
        self.calls.append((self.name, [x.items for x in params_list]))

    def deactivate(self, p):
        self.calls.append((self.name, "off"))


@pytest.fixture
def networks():
    from modules import extra_networks

    extra_networks.initialize()
    yield extra_networks
    extra_networks.initialize()


def test_parse_prompt_removes_tags_and_splits_arguments(networks):
    text, data = networks.parse_prompt("a <lora:x:0.8> cat, <hypernet:h> <lora:y:te=0.5:1>")
    assert text == "a  cat,  "
    assert [p.items for p in data["lora"]] == [["x", "0.8"], ["y", "te=0.5", "1"]]
    assert data["lora"][1].named == {"te": "0.5"} and data["lora"][1].positional == ["y", "1"]
    assert [p.items for p in data["hypernet"]] == [["h"]]
    prompts, first = networks.parse_prompts(["<lora:a:1> one", "<lora:b:1> two"])
    assert prompts == [" one", " two"] and [p.items for p in first["lora"]] == [["a", "1"]]
    assert networks.parse_prompt("no tags <not a tag>") == ("no tags <not a tag>", {})


def test_activate_calls_named_then_others_and_reports_failures(networks, capsys):
    calls = []
    lora, other = networks.ExtraNetwork("lora"), Recorder("other", calls)
    lora.activate = Recorder("lora", calls).activate
    lora.deactivate = Recorder("lora", calls).deactivate
    networks.register_extra_network(lora)
    networks.register_extra_network(other)
    networks.register_extra_network(Recorder("broken", calls, fail=True))
    networks.register_extra_network_alias(lora, "lyco")
    _, data = networks.parse_prompt("<lyco:z:1> <unknown:q>")
    p = SimpleNamespace(scripts=None)
    networks.activate(p, data)
    assert calls == [("lora", [["z", "1"]]), ("other", [])]
    assert "activating extra network broken: RuntimeError" in capsys.readouterr().err
    networks.deactivate(p, data)
    assert calls[2:] == [("lora", "off"), ("other", "off"), ("broken", "off")]
    with pytest.raises(NotImplementedError):
        networks.ExtraNetwork("base").activate(p, [])


# --- masking, errors, call_queue ----------------------------------------------------------------------------
def test_masking_crop_regions_as_a1111():
    from modules import masking

    mask = np.zeros((32, 48), dtype=np.uint8)
    mask[4:8, 10:20] = 1
    assert masking.get_crop_region(mask) == (10, 4, 20, 8)
    assert masking.get_crop_region(Image.fromarray(mask * 255), pad=6) == (4, 0, 26, 14)
    assert masking.get_crop_region(np.zeros((32, 48), dtype=np.uint8), pad=2) == (
        46,
        30,
        2,
        2,
    )  # A1111's empty
    assert masking.get_crop_region_v2(np.zeros((8, 8))) is None
    assert masking.expand_crop_region((10, 4, 20, 8), 64, 64, 48, 32) == (10, 1, 20, 11)
    with pytest.raises(ValueError, match="2-D"):
        masking.get_crop_region(np.zeros((2, 2, 3)))


def test_errors_print_as_a1111(capsys):
    from modules import errors

    errors.report("first\nsecond")
    try:
        raise KeyError("k")
    except KeyError as exc:
        errors.display_once(exc, "a task")
        errors.display_once(exc, "a task")
    errors.run(lambda: [][1], "indexing")
    errors.print_error_explanation("short\nlonger line")
    err = capsys.readouterr().err
    assert err.startswith("*** first\n*** second\n")
    assert err.count("a task: KeyError") == 1 and "indexing: IndexError" in err
    assert "===========\nshort\nlonger line\n===========" in err
    assert errors.get_exceptions()[0]["exception"] == "list index out of range"


def test_call_queue_wrappers(capsys):
    from modules import call_queue, shared

    def boom(x):
        raise ValueError(f"<{x}>")

    assert call_queue.wrap_gradio_call(boom)("v") == (
        None,
        "",
        "<div class='error'>ValueError: &lt;v&gt;</div>",
    )
    assert "Error completing request" in capsys.readouterr().err
    assert call_queue.wrap_gradio_call(boom, extra_outputs=[1])("v")[0] == 1
    seen = []
    out = call_queue.wrap_gradio_gpu_call(lambda: seen.append(shared.state.job) or ["img", "<p>x</p>"])()
    assert seen == ["<lambda>"] and out[0] == "img" and out[1].startswith("<p>x</p><div class='performance'>")
    assert call_queue.wrap_queued_call(call_queue.queue_lock.locked)() is True
    assert not call_queue.queue_lock.locked()


# --- paths_internal, sd_models, sd_vae, extensions over the app's real objects --------------------------------
@pytest.fixture
def bound_app(tmp_path, tiny_checkpoint_dir):
    """The facade bound to a real ModelManager and ExtensionManager over folders in tmp_path."""
    data = config_paths.DataPaths(tmp_path / "data")
    data.ensure()
    for name in ("tiny-sd1.safetensors", "tiny-sd2-v.safetensors"):
        shutil.copy(tiny_checkpoint_dir / name, data.checkpoints_dir / name)
    (data.vae_dir / "sub").mkdir()
    (data.vae_dir / "sub" / "my.vae.safetensors").write_bytes(b"not loaded by listing")
    manager = ModelManager([data.checkpoints_dir], [data.vae_dir], include_default_dir=False)
    extensions = ExtensionManager(data.extensions_dir, tmp_path / "builtin")
    shutil.copytree(SAMPLE, data.extensions_dir / "sample-surface")
    (tmp_path / "builtin" / "core-ext").mkdir(parents=True)
    extensions.discover()
    services = SimpleNamespace(models=ManagedModels(manager), extensions=SimpleNamespace(manager=extensions))
    saved = (config_paths.data_path, config_paths.models_path, config_paths.extensions_dir)
    config_paths.configure(data)
    facade_shared.bind(services=services)
    yield data, manager, extensions
    config_paths.data_path, config_paths.models_path, config_paths.extensions_dir = saved
    facade_shared.reset()


def test_paths_internal_follows_the_data_dir(bound_app):
    from modules import paths_internal

    data, _, _ = bound_app
    assert paths_internal.data_path == str(data.data_dir)
    assert paths_internal.models_path == str(data.models_dir)
    assert paths_internal.extensions_dir == str(data.extensions_dir)
    assert (
        Path(paths_internal.default_sd_model_file).is_file()
        and Path(paths_internal.sd_default_config).is_file()
    )
    assert paths_internal.sd_model_file == paths_internal.default_sd_model_file  # no --ckpt


def test_sd_models_lists_and_finds_what_the_manager_discovered(bound_app, tiny_checkpoint_dir):
    from modules import sd_models, shared

    data, _, _ = bound_app
    assert list(sd_models.checkpoints_list) == ["tiny-sd1.safetensors", "tiny-sd2-v.safetensors"]
    info = sd_models.checkpoints_list["tiny-sd2-v.safetensors"]
    assert (info.name, info.model_name, info.name_for_extra) == (
        "tiny-sd2-v.safetensors",
        "tiny-sd2-v",
        "tiny-sd2-v",
    )
    assert info.filename == str((data.checkpoints_dir / "tiny-sd2-v.safetensors").resolve())
    assert info.sha256 is None and info.hash == sd_models.model_hash(info.filename) != "NOFILE"
    assert sd_models.model_hash(str(data.data_dir / "missing.ckpt")) == "NOFILE"
    assert sd_models.get_closet_checkpoint_match("sd2") is info
    assert (
        sd_models.get_closet_checkpoint_match("tiny-sd1")
        is sd_models.checkpoints_list["tiny-sd1.safetensors"]
    )
    assert sd_models.get_closet_checkpoint_match("tiny-sd2-v.safetensors [0123456789]") is info
    assert sd_models.get_closet_checkpoint_match("nothing") is None
    assert sd_models.select_checkpoint().title == "tiny-sd1.safetensors"  # no setting: the first listed
    shared.opts.set("sd_model_checkpoint", "tiny-sd2-v")
    assert sd_models.select_checkpoint() is info

    assert info.calculate_shorthash() == hashlib.sha256(Path(info.filename).read_bytes()).hexdigest()[:10]
    listed = sd_models.checkpoints_list  # extensions keep the dict: it follows refreshes
    shutil.copy(tiny_checkpoint_dir / "tiny-sdxl.safetensors", data.checkpoints_dir / "new.safetensors")
    sd_models.list_models()
    assert "new.safetensors" in listed and f"tiny-sd2-v.safetensors [{info.shorthash}]" in listed
    assert sd_models.checkpoint_aliases[info.shorthash].title == f"tiny-sd2-v.safetensors [{info.shorthash}]"


def test_sd_vae_lists_the_manager_vaes(bound_app):
    from modules import sd_vae

    data, _, _ = bound_app
    assert dict(sd_vae.vae_dict.items()) == {
        "sub/my.vae.safetensors": str(data.vae_dir / "sub" / "my.vae.safetensors")
    }
    assert sd_vae.loaded_vae_file is None and sd_vae.base_vae is None  # nothing loaded yet
    (data.vae_dir / "b.pt").write_bytes(b"x")
    sd_vae.refresh_vae_list()
    assert "b.pt" in sd_vae.vae_dict
    with pytest.raises(FileNotFoundError, match="not one of the listed"):
        sd_vae.reload_vae_weights(vae_file=str(data.data_dir / "elsewhere.pt"))


def test_extensions_module_shows_the_installed_extensions(bound_app):
    from modules import extensions

    data, _, manager = bound_app
    listed = [(e.name, e.enabled, e.is_builtin) for e in extensions.extensions]
    assert listed == [("core-ext", True, True), ("sample-surface", True, False)]
    ext = extensions.find_extension(
        str(data.extensions_dir / "sample-surface" / "scripts" / "surface_probe.py")
    )
    assert ext.path == str(data.extensions_dir / "sample-surface")
    assert [f.filename for f in ext.list_files("scripts", ".py")] == ["surface_probe.py"]
    from modules import scripts  # images-browser lists every script file this way

    listed = [(f.basedir, f.filename) for f in scripts.list_scripts("scripts", ".py")]
    assert (ext.path, "surface_probe.py") in listed
    assert all(os.path.isfile(f.path) for f in scripts.list_scripts("scripts", ".py"))
    own_only = scripts.list_scripts("scripts", ".py", include_extensions=False)
    assert all(f.basedir != ext.path for f in own_only)
    (data.extensions_dir / "sample-surface" / "style.css").write_text("a {}")
    styles = scripts.list_files_with_name("style.css")
    assert str(data.extensions_dir / "sample-surface" / "style.css") in styles
    manager.set_enabled("sample-surface", False)
    assert str(data.extensions_dir / "sample-surface" / "style.css") not in scripts.list_files_with_name(
        "style.css"
    )
    assert [e.name for e in extensions.active()] == ["core-ext"]
    assert extensions.extensions_dir == str(data.extensions_dir)


def test_shared_state_is_shared_state_class():
    from modules import shared, shared_state

    # shared.state is a proxy onto the running job's State (a contextvar); outside a job, the idle one
    assert shared_state.State is shared.State and isinstance(shared.state, shared_state.State)
    assert shared.state.job_count == 0 and shared.state.interrupted is False


def test_model_calls_run_as_jobs_of_the_queue_and_inline_inside_one():
    import threading

    from sdwebui.facade import bound
    from sdwebui.jobs.queue import JobQueue

    jobs = JobQueue(workers=1)
    facade_shared.bind(services=SimpleNamespace(jobs=jobs))
    try:
        here = threading.current_thread()
        assert bound.in_queue(threading.current_thread) is not here  # from a route thread: a job
        nested = jobs.submit(lambda ctx: bound.in_queue(threading.current_thread)).wait(60)
        assert nested.name.startswith("job-worker")  # inside a job: right there, no deadlock
        with pytest.raises(KeyError, match="boom"):  # the work's own error, not the queue's wrapper
            bound.in_queue(lambda: {}["boom"])
        from modules import call_queue

        ran_on = call_queue.wrap_gradio_gpu_call(lambda: [threading.current_thread().name, ""])()[0]
        assert ran_on.startswith("job-worker")  # serialised with the generations
        assert call_queue.wrap_queued_call(lambda: threading.current_thread())() is not here
        assert [j.kind for j in jobs.recent()][:2] == ["extension", "extension"]
    finally:
        jobs.shutdown()
        facade_shared.reset()


# --- the sample extension in the real app, over real HTTP ---------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("surface")
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for seed, name in ((0, "alpha"), (1, "beta")):
        tiny_models.write_single_file(
            tiny_models.tiny_loaded_model("sd1", seed=seed), folder / f"{name}.safetensors"
        )
    tiny_models.write_vae_file(
        tiny_models.tiny_loaded_model("sd1", seed=7).vae, data_dir / "models" / "VAE" / "other.safetensors"
    )
    shutil.copytree(SAMPLE, data_dir / "extensions" / "sample-surface")
    with start_server(data_dir, ["--use-cpu", "all"]) as srv:
        yield srv


def txt2img(server, prompt):
    body = {"prompt": prompt, "seed": 5, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}
    response = requests.post(server.api + "/txt2img", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])


def call(server, method, path, **params):
    response = requests.request(method, server.url + path, params=params, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_sample_extension_uses_the_surface_in_a_generation(server):
    info = txt2img(server, "a <surface:one:k=v> cat")
    assert info["all_prompts"] == ["a  cat"]  # extra_networks.parse_prompts took the tag out
    infotext = info["infotexts"][0]
    for entry in ("Surface net: one;k=v", "Surface crop: 2x6x14x18", "Surface model: alpha",
                  "Surface selected: alpha.safetensors"):  # fmt: skip
        assert entry in infotext


def test_sample_extension_reports_each_module(server):
    report = call(server, "GET", "/sample-surface/report")
    data_dir = server.data_dir.resolve()
    alpha = data_dir / "models" / "Stable-diffusion" / "alpha.safetensors"
    content = alpha.read_bytes()
    sha256 = hashlib.sha256(content).hexdigest()
    models = requests.get(server.api + "/sd-models", timeout=60).json()
    assert report["checkpoints"] == report["tiles"] == [m["title"] for m in models]
    assert report["selected"] == {
        "title": f"alpha.safetensors [{sha256[:10]}]", "name": "alpha.safetensors", "model_name": "alpha",
        "hash": hashlib.sha256(content[0x100000:0x110000]).hexdigest()[:8], "sha256": sha256,
        "shorthash": sha256[:10], "filename": str(alpha),
    }  # fmt: skip
    assert report["model_hash"] == report["selected"]["hash"]
    assert report["closest"]["name"] == "beta.safetensors" and report["no_match"] is None
    assert report["alias_of_hash"] == report["current"] == report["selected"]
    assert report["sd_model"] == report["checkpoint_setting"] == report["selected"]["title"]
    assert report["vae_dict"] == {"other.safetensors": str(data_dir / "models" / "VAE" / "other.safetensors")}
    assert (report["loaded_vae_file"], report["base_vae"]) == (None, "AutoencoderKL")
    assert report["paths"] == {
        "script_path": str(REPO), "data_path": str(data_dir), "models_path": str(data_dir / "models"),
        "extensions_dir": str(data_dir / "extensions"), "extensions_builtin_dir": str(REPO / "extensions-builtin"),
        "sd_configs_path": str(REPO / "sdwebui" / "models" / "configs"),
        "sd_default_config": str(REPO / "sdwebui" / "models" / "configs" / "sd1.json"),
        "sd_model_file": str(REPO / "models" / "default" / "shapes64.safetensors"),
        "default_sd_model_file": str(REPO / "models" / "default" / "shapes64.safetensors"),
    }  # fmt: skip
    assert report["paths_models_path"] == str(data_dir / "models")
    sample = ["sample-surface", True, False, str(data_dir / "extensions" / "sample-surface")]
    assert sample in report["extensions"] and ["xyz-plot", True, True] in [
        e[:3] for e in report["extensions"]
    ]
    assert "sample-surface" in report["active"] and report["own_scripts"] == ["surface_probe.py"]
    assert report["extra_networks"] == {"prompt": "a  cat ", "surface": [["one", "two", "k=v"], ["three"]],
                                        "named": {"k": "v"}, "positional": ["one", "two"]}  # fmt: skip
    # the script's own activate, the app's per-batch one (no tags left: []), the script's deactivate
    assert report["activations"][:3] == [[["one", "k=v"]], [], "off"]
    assert report["errors"] == {
        "display_once_count": 1, "report": ["*** line one", "*** line two"],
        "explanation": ["=========", "why", "it failed", "========="], "run": "dividing: ZeroDivisionError",
        "last_exception": "division by zero",
    }  # fmt: skip
    queue = report["call_queue"]
    assert queue["failed"] == [None, "", "<div class='error'>RuntimeError: bad v</div>"] and queue["logged"]
    assert queue["ok"][0] == "V" and queue["ok"][1].startswith("<p>done</p><div class='performance'>")
    assert queue["lock_held_inside"] is True and queue["lock_held_after"] is False
    masks = report["masking"]
    assert masks["crop"] == [9, 3, 15, 9] and masks["expanded"] == [8, 4, 16, 8]
    assert masks["filled_pixel"][0] > masks["filled_pixel"][2]  # filled from the red around it
    assert report["postprocessing"] == {"classes": ["Surface sharpen"], "pixel": [255, 0, 0],
                                        "info": {"Surface sharpen": 0.7}, "suffix": "-sharp"}  # fmt: skip
    assert report["attention"] == [["a ", 1.0], ["cat", 1.5]] and report["infotext"] in (5, "5")
    assert report["copypaste_same"] and report["noise_shape"] == [4, 8, 8] and report["device"] == "cpu"
    assert report["api_flag"] and report["parser"] == "ArgumentParser" and report["styles"]
    assert report["tool_button"] and report["grid"] == [16, 16] and len(report["samplers"]) == 2
    assert report["state_class"] and report["processing_class"] == "StableDiffusionProcessingTxt2Img"


def test_sample_extension_switches_models_and_vaes(server):
    body = {"prompt": "long", "seed": 1, "steps": 60, "width": 64, "height": 64, "sampler_name": "Euler"}
    task = requests.post(server.api + "/txt2img?async=true", json=body, timeout=60).json()["task_id"]

    def sampling() -> bool:
        state = requests.get(server.api + "/progress", timeout=10).json()["state"]
        return state["job"] == task and state["sampling_step"] >= 1

    wait_until(sampling, "the long generation started sampling", timeout=120)
    switched = call(server, "POST", "/sample-surface/switch", name="beta")  # queued behind the generation
    finished = requests.get(f"{server.api}/tasks/{task}", timeout=60).json()
    assert finished["status"] == "done", finished  # its model was not taken away mid-run
    assert "Surface model: alpha" in json.loads(finished["result"]["info"])["infotexts"][0]
    assert switched["loaded"].startswith("beta.safetensors [") and switched["setting"] == switched["loaded"]
    options = requests.get(server.api + "/options", timeout=60).json()
    assert options["sd_model_checkpoint"] == switched["loaded"]
    assert "Surface model: beta" in txt2img(server, "a dog")["infotexts"][0]  # the next job runs on it

    vae_file = str(server.data_dir.resolve() / "models" / "VAE" / "other.safetensors")
    assert call(server, "POST", "/sample-surface/vae", name="other.safetensors") == {
        "vae_name": "other.safetensors", "loaded_vae_file": vae_file}  # fmt: skip
    assert call(server, "POST", "/sample-surface/vae", name="None") == {
        "vae_name": None,
        "loaded_vae_file": None,
    }

    folder = server.data_dir / "models" / "Stable-diffusion"
    shutil.copy(folder / "alpha.safetensors", folder / "gamma.safetensors")
    requests.post(server.api + "/refresh-checkpoints", timeout=60).raise_for_status()
    assert any(
        t.startswith("gamma.safetensors")
        for t in call(server, "GET", "/sample-surface/report")["checkpoints"]
    )
    assert call(server, "POST", "/sample-surface/unload") == {"sd_model": True}
