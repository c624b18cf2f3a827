"""A1111's public module names, for extensions: each `modules/<name>.py` is a thin forwarder
(`sys.modules[__name__] = <the implementation>`), so `modules.shared` IS `sdwebui.facade.shared`.

Public modules (the same list as docs/extensions.md and tests/test_a1111_surface.py):
cache, call_queue, cmd_args, devices, errors, extensions, extra_networks, extras, generation_parameters_copypaste,
hashes, images, img2img, infotext_utils, launch_utils, masking, modelloader, paths, paths_internal, processing,
prompt_parser, rng, safe, script_callbacks, scripts, scripts_postprocessing, sd_hijack, sd_models, sd_samplers,
sd_samplers_cfg_denoiser, sd_samplers_common, sd_samplers_compvis, sd_samplers_kdiffusion, sd_vae, shared,
shared_items, shared_state, styles, timer, ui, ui_common, ui_components, upscaler.

The app itself lives in the internal package `sdwebui/`, which never imports `modules`.
"""


def __getattr__(name: str):
    """`import modules` then `modules.shared_items...` (A1111 imports its modules at start-up, so extensions
    reach them as attributes of the package): a public module is imported when first reached this way."""
    import importlib
    import importlib.util

    if name.startswith("_") or not importlib.util.find_spec(f"modules.{name}"):
        raise AttributeError(f"module 'modules' has no attribute {name!r}")
    return importlib.import_module(f"modules.{name}")
