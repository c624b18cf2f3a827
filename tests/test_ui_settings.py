"""The UI's request building reads the settings: Clip skip (quicksettings) and the Default sampler."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr

from sdwebui.config.options import Options, default_templates
from sdwebui.config.resolve import RawFields
from sdwebui.config.styles import StyleDatabase
from sdwebui.models.families import FamilyDefaults
from webui.backend import UiBackend
from webui.params import build_params_for
from webui.ui_config import UiConfig

SAMPLERS = ["Euler a", "Euler", "DPM++ 2M"]


class _Backend:
    """What build_params_for asks of webui.backend.UiBackend."""

    def __init__(self, options: Options):
        self.options = options

    def samplers(self) -> list[str]:
        return SAMPLERS

    def schedulers(self) -> list[str]:
        return ["Automatic", "Karras"]

    def native_resolution(self) -> int:
        return 64

    def family_defaults(self) -> FamilyDefaults:
        return FamilyDefaults()  # an SD family


def _values(params) -> dict:
    defaults = {
        params.sampler_name: params.sampler_name.value,
        params.scheduler: "Automatic",
        params.steps: 3,
        params.width: 64,
        params.height: 64,
        params.batch_count: 1,
        params.batch_size: 1,
        params.cfg_scale: 7.0,
        params.distilled_cfg_scale: 3.5,
        params.seed: 5,
        params.subseed: -1,
        params.subseed_strength: 0.0,
        params.seed_resize_from_w: 0,
        params.seed_resize_from_h: 0,
    }
    assert set(defaults) == set(params.components())
    return defaults


def test_clip_skip_setting_reaches_the_request(tmp_path):
    options = Options(default_templates())
    with gr.Blocks():
        params = build_params_for("txt2img", UiConfig(None), _Backend(options))
    backend = UiBackend(SimpleNamespace(options=options, styles=StyleDatabase(tmp_path / "styles.csv")))
    raw = RawFields(prompt="a", **params.request_fields(_values(params)))
    assert backend.resolve(raw).clip_skip == 1
    options.set("CLIP_stop_at_last_layers", 2)  # what the quicksettings slider does
    request = backend.resolve(raw)
    assert request.clip_skip == 2 and request.prompt == "a" and request.seed == 5


def test_default_sampler_setting_is_the_ui_default_now_and_after_restart(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling method/value": "Euler a"}))  # written by older builds
    options = Options(default_templates(), tmp_path / "config.json")
    options.set("default_sampler", "Euler")
    cfg = UiConfig(path)
    with gr.Blocks():
        params = build_params_for("txt2img", cfg, _Backend(options))
    assert params.sampler_name.value == "Euler"
    on_page_load = params.sampler_name.load_event_to_attach[0]
    options.set("default_sampler", "DPM++ 2M")  # Settings -> Apply, no restart
    assert on_page_load() == "DPM++ 2M"
    cfg.save_missing()
    assert "txt2img/Sampling method/value" not in json.loads(path.read_text())
    options.save()
    restarted = Options(default_templates(), tmp_path / "config.json")
    restarted.load()
    with gr.Blocks():
        params = build_params_for("txt2img", UiConfig(path), _Backend(restarted))
    assert params.sampler_name.value == "DPM++ 2M"


def test_default_schedule_type_setting_is_the_ui_default(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Schedule type/value": "Automatic"}))  # written by older builds
    options = Options(default_templates())
    options.set("default_scheduler", "Karras")
    cfg = UiConfig(path)
    with gr.Blocks():
        params = build_params_for("txt2img", cfg, _Backend(options))
    assert params.scheduler.value == "Karras"
    options.set("default_scheduler", "Automatic")  # Settings -> Apply, no restart
    on_page_load = params.scheduler.load_event_to_attach[0]
    assert on_page_load() == "Automatic"
    cfg.save_missing()
    assert "txt2img/Schedule type/value" not in json.loads(path.read_text())
