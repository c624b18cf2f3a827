"""`modules.extra_networks` as extensions use it: the built-in Lora network in the registry (alias lyco), a
network type an extension registers working end to end (its tags activated per batch with p, removed from
the encoded text, kept in the infotext, deactivated at the end), and the Lora network's activate(p, params)
applying a LoRA to the job's model as the same tag in the prompt does."""

from __future__ import annotations

import numpy as np
import pytest

from modules import extra_networks, processing, scripts
from sdwebui.engine.context import JobContext
from sdwebui.engine.extra_networks import LoraNetworksPatch
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import RequestError
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.lease import ModelLease
from sdwebui.models.lora import DeltaCache
from sdwebui.models.lora.library import LoraLibrary
from tests.lora_fixtures import save_safetensors
from tests.test_lora import lora_tensors

SETTINGS = EngineSettings(save_images=False)


class Recorder(extra_networks.ExtraNetwork):
    def __init__(self):
        super().__init__("mynet")
        self.calls: list = []

    def activate(self, p, params_list):
        self.calls.append(("activate", [params.items for params in params_list]))
        if params_list:
            p.extra_generation_params["MyNet"] = "+".join(params.items[0] for params in params_list)

    def deactivate(self, p):
        self.calls.append(("deactivate",))


@pytest.fixture
def recorder():
    network = Recorder()
    extra_networks.register_extra_network(network)
    yield network
    extra_networks.extra_network_registry.pop("mynet", None)


def txt2img(prompt: str, engine, n_iter: int = 1, runner=None, model=None):
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt=prompt, seed=5, steps=2, width=64, height=64, n_iter=n_iter, sampler_name="Euler"
    )
    p.scripts, p.script_args, p.engine_run, p.sd_model = runner, [0], engine, model
    return processing.process_images(p)


def test_the_registry_holds_the_built_in_lora_network():
    lora = extra_networks.extra_network_registry["lora"]
    assert isinstance(lora, extra_networks.ExtraNetworkLora) and lora.name == "lora"
    assert extra_networks.extra_network_aliases["lyco"] is lora
    extra_networks.initialize()  # A1111's start-up clears the registry; the built-in one comes back
    assert isinstance(extra_networks.extra_network_registry["lora"], extra_networks.ExtraNetworkLora)
    assert extra_networks.custom_kinds() == frozenset()


def test_a_registered_network_type_works_end_to_end(recorder, tiny_sd1_model):
    def engine(req, hooks):
        return generate(tiny_sd1_model, req, JobContext(), SETTINGS, hooks)

    tagged = txt2img("a cube <mynet:foo:2>", engine, n_iter=2)
    assert recorder.calls == [("activate", [["foo", "2"]])] * 2 + [("deactivate",)]
    assert tagged.infotexts[0].startswith("a cube <mynet:foo:2>\n") and "MyNet: foo" in tagged.infotexts[0]
    plain = txt2img("a cube ", engine, n_iter=2)  # the tag is not encoded: the same images as without it
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(tagged.images, plain.images, strict=True)
    )
    extra_networks.extra_network_registry.pop("mynet")
    with pytest.raises(RequestError, match="remove <mynet:foo:2>"):
        txt2img("a cube <mynet:foo:2>", engine)


class LoraFromScript(scripts.Script):
    def title(self):
        return "Lora from a script"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process_batch(self, p, *args, **kwargs):
        lora = extra_networks.extra_network_registry["lora"]
        lora.activate(p, [extra_networks.ExtraNetworkParams(items=["style", "1"])])


def test_the_lora_network_applies_what_a_script_asks_for(tiny_sd1_model, tmp_path):
    save_safetensors(lora_tensors(), tmp_path / "style.safetensors")
    library = LoraLibrary([tmp_path])
    patch = LoraNetworksPatch(lambda name, m: library.network(library.find(name), m), DeltaCache())
    runner = scripts.ScriptRunner([scripts.ScriptClassData(LoraFromScript, "/x/l.py", "/x", None, "l")])
    runner.ensure_ui()
    with ModelLease(tiny_sd1_model, [patch]) as view:

        def engine(req, hooks):
            return generate(view, req, JobContext(), SETTINGS, hooks)

        by_script = txt2img("a cube", engine, runner=runner, model=view)
        by_tag = txt2img("a cube<lora:style:1>", engine, model=view)
    plain = txt2img("a cube", lambda req, hooks: generate(tiny_sd1_model, req, JobContext(), SETTINGS, hooks))
    assert np.array_equal(np.asarray(by_script.images[0]), np.asarray(by_tag.images[0]))
    assert not np.array_equal(np.asarray(by_script.images[0]), np.asarray(plain.images[0]))
    assert 'Lora hashes: "style: ' in by_script.infotexts[0]
