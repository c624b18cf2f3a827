"""Sample extension that uses every public A1111 module (written as community extensions are).

Over the real app it adds `GET /sample-surface/report` (what each module shows), `POST
/sample-surface/switch` (sd_models.reload_model_weights), `POST /sample-surface/vae`
(sd_vae.reload_vae_weights) and an always-on script that handles `<surface:...>` prompt tags through
extra_networks and writes what it saw into the infotext.
"""

import io
import sys

import numpy as np
from PIL import Image

import modules.scripts as scripts
from modules import (
    call_queue,
    cmd_args,
    devices,
    errors,
    extensions,
    extra_networks,
    generation_parameters_copypaste,
    images,
    infotext_utils,
    masking,
    paths,
    paths_internal,
    processing,
    prompt_parser,
    rng,
    script_callbacks,
    scripts_postprocessing,
    sd_models,
    sd_samplers,
    sd_vae,
    shared,
    shared_state,
    styles,
    ui_components,
)
from modules.sd_models import checkpoints_list  # kept by reference, as extensions do
from modules.shared import opts

ACTIVATIONS = []
INFOTEXT = "a cat\nSteps: 2, Sampler: Euler, Seed: 5"  # A1111 reads a last line of three or more fields


class SurfaceNetwork(extra_networks.ExtraNetwork):
    def __init__(self):
        super().__init__("surface")

    def activate(self, p, params_list):
        ACTIVATIONS.append([params.items for params in params_list])
        if params_list:
            params = params_list[0]
            p.extra_generation_params["Surface net"] = (
                "/".join(params.positional) + ";" + ",".join(f"{k}={v}" for k, v in params.named.items())
            )

    def deactivate(self, p):
        ACTIVATIONS.append("off")


extra_networks.register_extra_network(SurfaceNetwork())


class Sharpen(scripts_postprocessing.ScriptPostprocessing):
    name = "Surface sharpen"
    order = 5

    def process(self, pp, **args):
        pp.image = pp.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pp.info["Surface sharpen"] = args.get("amount")


class SurfaceProbe(scripts.Script):
    def title(self):
        return "Surface probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def before_process(self, p, *args):
        # the engine refuses prompts that still hold tags: take ours out before the job is planned
        p.prompt, self.network_data = extra_networks.parse_prompt(p.prompt)
        extra_networks.activate(p, self.network_data)

    def process(self, p, *args):
        mask = np.zeros((p.height, p.width), dtype=np.uint8)
        mask[8:16, 4:12] = 255
        box = masking.get_crop_region(mask, pad=2)
        p.extra_generation_params["Surface crop"] = "x".join(str(v) for v in box)
        p.extra_generation_params["Surface model"] = shared.sd_model.sd_checkpoint_info.model_name
        p.extra_generation_params["Surface selected"] = sd_models.select_checkpoint().name

    def postprocess(self, p, processed, *args):
        extra_networks.deactivate(p, self.network_data)


def _capture_stderr(func):
    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        func()
        return sys.stderr.getvalue()
    finally:
        sys.stderr = saved


def _info(record):
    if record is None:
        return None
    return {
        k: getattr(record, k)
        for k in ("title", "name", "model_name", "hash", "sha256", "shorthash", "filename")
    }


def _errors_report():
    def raise_once():
        try:
            raise ValueError("surface probe failure")
        except ValueError as exc:
            errors.display_once(exc, "surface task")
            errors.display_once(exc, "surface task")  # printed once only

    displayed = _capture_stderr(raise_once)
    reported = _capture_stderr(lambda: errors.report("line one\nline two"))
    explained = _capture_stderr(lambda: errors.print_error_explanation("why\nit failed"))
    ran = _capture_stderr(lambda: errors.run(lambda: 1 / 0, "dividing"))
    return {
        "display_once_count": displayed.count("surface task: ValueError"),
        "report": reported.splitlines(),
        "explanation": explained.splitlines(),
        "run": ran.splitlines()[0],
        "last_exception": errors.get_exceptions()[0]["exception"],
    }


def _call_queue_report():
    def fail(x):
        raise RuntimeError(f"bad {x}")

    failed = _capture_stderr(lambda: _RESULTS.update(failed=call_queue.wrap_gradio_call(fail)("v")))
    ok = call_queue.wrap_gradio_gpu_call(lambda x: [x.upper(), "<p>done</p>"])("v")
    queued = call_queue.wrap_queued_call(lambda: call_queue.queue_lock.locked())()
    return {"failed": list(_RESULTS["failed"]), "logged": "Error completing request" in failed,
            "ok": list(ok), "lock_held_inside": queued, "lock_held_after": call_queue.queue_lock.locked()}  # fmt: skip


_RESULTS = {}


def _masking_report():
    mask = Image.new("L", (32, 32))
    mask.paste(255, (10, 4, 14, 8))
    image = Image.new("RGB", (32, 32), (200, 10, 10))
    image.paste((0, 0, 255), (10, 4, 14, 8))
    filled = masking.fill(image, mask)
    return {
        "crop": list(masking.get_crop_region(mask, pad=1)),
        "expanded": list(masking.expand_crop_region((10, 4, 14, 8), 64, 32, 32, 32)),
        "filled_pixel": list(filled.getpixel((12, 6))),
    }


def _postprocessing_report():
    pp = scripts_postprocessing.PostprocessedImage(Image.new("RGB", (4, 2)))
    pp.image.putpixel((0, 0), (255, 0, 0))
    found = [d.script_class for d in scripts.postprocessing_scripts_data]
    script = found[0]()
    script.process(pp, amount=0.7)
    pp.nametags.append("sharp")
    return {"classes": [c.name for c in found], "pixel": list(pp.image.getpixel((3, 0))), "info": pp.info,
            "suffix": pp.get_suffix()}  # fmt: skip


def report():
    selected = sd_models.select_checkpoint()
    model = shared.sd_model
    prompt, nets = extra_networks.parse_prompt("a <surface:one:two:k=v> cat <surface:three>")
    return {
        "checkpoints": list(checkpoints_list),
        "tiles": sd_models.checkpoint_tiles(),
        "selected": _info(selected),
        "closest": _info(sd_models.get_closet_checkpoint_match("bet")),
        "no_match": sd_models.get_closet_checkpoint_match("no such model"),
        "alias_of_hash": _info(sd_models.checkpoint_aliases.get(selected.shorthash or "")),
        "model_hash": sd_models.model_hash(selected.filename),
        "current": _info(sd_models.get_checkpoint_info()),
        "sd_model": model.sd_checkpoint_info.title if model is not None else None,
        "vae_dict": dict(sd_vae.vae_dict.items()),
        "loaded_vae_file": sd_vae.loaded_vae_file,
        "base_vae": type(sd_vae.base_vae).__name__,
        "unspecified": sd_vae.unspecified is not None,
        "paths": {
            name: str(getattr(paths_internal, name))
            for name in (
                "script_path",
                "data_path",
                "models_path",
                "extensions_dir",
                "extensions_builtin_dir",
                "sd_configs_path",
                "sd_default_config",
                "sd_model_file",
                "default_sd_model_file",
            )
        },  # fmt: skip
        "paths_models_path": paths.models_path,
        "extensions": [[e.name, e.enabled, e.is_builtin, e.path] for e in extensions.extensions],
        "active": [e.name for e in extensions.active()],
        "own_scripts": [f.filename for f in extensions.find_extension(__file__).list_files("scripts", ".py")],
        "state_class": isinstance(shared.state, shared_state.State),
        "extra_networks": {
            "prompt": prompt,
            "surface": [p.items for p in nets["surface"]],
            "named": nets["surface"][0].named,
            "positional": nets["surface"][0].positional,
        },
        "activations": ACTIVATIONS,
        "errors": _errors_report(),
        "call_queue": _call_queue_report(),
        "masking": _masking_report(),
        "postprocessing": _postprocessing_report(),
        "samplers": [s.name for s in sd_samplers.all_samplers][:2],
        "attention": [list(x) for x in prompt_parser.parse_prompt_attention("a (cat:1.5)")],
        "infotext": infotext_utils.parse_generation_parameters(INFOTEXT)["Seed"],
        "copypaste_same": generation_parameters_copypaste.parse_generation_parameters
        is infotext_utils.parse_generation_parameters,
        "noise_shape": list(rng.randn(5, (4, 8, 8)).shape),
        "device": str(devices.get_optimal_device()),
        "api_flag": bool(shared.cmd_opts.api),
        "parser": type(cmd_args.build_parser()).__name__,
        "styles": type(shared.prompt_styles).__name__ == styles.StyleDatabase.__name__,
        "tool_button": callable(ui_components.ToolButton),
        "grid": list(images.image_grid([Image.new("RGB", (8, 8))] * 4, rows=2).size),
        "processing_class": processing.StableDiffusionProcessingTxt2Img.__name__,
        "checkpoint_setting": opts.sd_model_checkpoint,
    }


def switch(name: str):
    info = sd_models.get_closet_checkpoint_match(name)
    loaded = sd_models.reload_model_weights(info=info)
    return {"loaded": loaded.sd_checkpoint_info.title, "setting": opts.sd_model_checkpoint}


def vae(name: str):
    loaded = sd_vae.reload_vae_weights(vae_file=sd_vae.vae_dict[name] if name != "None" else None)
    return {"vae_name": loaded.vae_name, "loaded_vae_file": sd_vae.loaded_vae_file}


def unload():
    sd_models.unload_model_weights()
    return {"sd_model": shared.sd_model is None}


def on_app_started(demo, app):
    app.add_api_route("/sample-surface/report", report, methods=["GET"])
    app.add_api_route("/sample-surface/switch", switch, methods=["POST"])
    app.add_api_route("/sample-surface/vae", vae, methods=["POST"])
    app.add_api_route("/sample-surface/unload", unload, methods=["POST"])


script_callbacks.on_app_started(on_app_started)
