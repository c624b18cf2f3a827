"""A1111's public module names, for extensions: each `modules/<name>.py` is a thin forwarder
(`sys.modules[__name__] = <the implementation>`), so `modules.shared` IS `sdwebui.facade.shared`.

Public modules (the same list as docs/extensions.md and tests/test_a1111_surface.py):
call_queue, cmd_args, devices, errors, extensions, extra_networks, generation_parameters_copypaste, images,
infotext_utils, masking, paths, paths_internal, processing, prompt_parser, rng, script_callbacks, scripts,
scripts_postprocessing, sd_models, sd_samplers, sd_vae, shared, shared_state, styles, ui_components.

The app itself lives in the internal package `sdwebui/`, which never imports `modules`.
"""
