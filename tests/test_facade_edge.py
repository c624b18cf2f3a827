"""The A1111 facade at the edge of the pipeline (issue 14), on the real app: the real ModelManager over two tiny
checkpoint files, the real job queue and engine. A job no script can see builds no `p`; with scripts, `p` is
a view over the typed request; `shared.state` / `shared.sd_model` are the running job's.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from modules import cmd_args, processing, script_callbacks, scripts, shared
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import Img2ImgRequest, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.extensions import bridge
from sdwebui.services import ScriptCall, build_services
from tests import tiny_models
from tests.sample_extensions.harness import reset_scripts

BASE = dict(seed=3, steps=2, width=64, height=64, sampler_name="Euler", cfg_scale=7, do_not_save_samples=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("facade-edge")
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for name, seed in (("a", 0), ("b", 1)):
        tiny_models.write_single_file(
            tiny_models.tiny_loaded_model("sd1", seed=seed), folder / f"{name}.safetensors"
        )
    args = cmd_args.parse_args(["--data-dir", str(data_dir), "--use-cpu", "all"])
    services = build_services(args)  # the real ModelManager: no double with a convenient `current`
    bridge.attach_extensions(services)
    yield services
    services.jobs.shutdown()
    reset_scripts()


@pytest.fixture
def tab_scripts():
    """Install Script classes as the txt2img tab's scripts for one test (the loaded ones come back after)."""
    saved = scripts.scripts_txt2img

    def install(*classes):
        data = [scripts.ScriptClassData(c, f"/x/{c.__name__}.py", "/x", None, "edge") for c in classes]
        scripts.scripts_txt2img = scripts.ScriptRunner(data)

    yield install
    scripts.scripts_txt2img = saved
    script_callbacks.clear_callbacks()


@pytest.fixture
def p_built(monkeypatch):
    """Names of the `p` classes constructed (every StableDiffusionProcessing* goes through this __init__)."""
    built: list[str] = []
    original = processing.StableDiffusionProcessing.__init__

    def counting(self, **kwargs):
        built.append(type(self).__name__)
        original(self, **kwargs)

    monkeypatch.setattr(processing.StableDiffusionProcessing, "__init__", counting)
    return built


def title(services, name: str) -> str:
    return next(t for t in services.models.checkpoint_titles() if t.startswith(f"{name}.safetensors"))


A, B = "a.safetensors", "b.safetensors"  # the checkpoints' file names


def run(services, timeout: float = 300, call: ScriptCall | None = None, **fields):
    request = Txt2ImgRequest(**{**BASE, **fields})
    return services.submit_generation(request, script_call=call or ScriptCall("txt2img")).wait(timeout)


class NoOp(scripts.Script):
    def title(self):
        return "No op"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        p.extra_generation_params.pop("Never set", None)  # reads p, changes nothing


class UiOnly(scripts.Script):
    """An AlwaysVisible script with controls and no processing hook: nothing in a job sees p."""

    def title(self):
        return "UI only"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return [gr.Checkbox(label="on")]


class Probe(scripts.Script):
    """Records, inside process(), the model and state a script sees."""

    seen: list = []
    models: list = []

    def title(self):
        return "Probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        model = shared.sd_model
        Probe.models.append(model.loaded_model)
        Probe.seen.append((file_name(model), file_name(p.sd_model), shared.state.job))


def file_name(model) -> str:
    return Path(model.sd_checkpoint_info.filename).name


def test_a_job_no_script_sees_builds_no_p_and_gives_the_same_image(app, tab_scripts, p_built):
    tab_scripts(UiOnly)  # no script with a processing hook on the tab
    seen = []
    script_callbacks.on_cfg_denoiser(lambda params: seen.append((shared.state.job, params.sampling_step)))
    plain = run(app, prompt="a cat")
    assert p_built == []  # straight to the engine
    assert seen and seen[0] == ("txt2img", 0)  # the callbacks still run, inside the job's state

    tab_scripts(NoOp)  # an AlwaysVisible script is loaded: one p, a view of the same request
    hooked = run(app, prompt="a cat")
    assert p_built == ["StableDiffusionProcessingTxt2Img"]
    assert hooked.infotexts == plain.infotexts and hooked.seeds == plain.seeds
    assert np.array_equal(np.asarray(hooked.pil_images[0]), np.asarray(plain.pil_images[0]))


def test_an_image_saved_callback_makes_the_job_build_p(app, tab_scripts, p_built):
    tab_scripts()
    got = []
    script_callbacks.on_before_image_saved(lambda params: got.append(type(params.p).__name__))
    run(app, prompt="a cat", do_not_save_samples=False)
    assert p_built == got == ["StableDiffusionProcessingTxt2Img"]  # the callback receives p, as in A1111


def test_p_is_a_view_over_the_request_and_reads_back_what_scripts_change():
    init = tiny_models  # any object: the request's images are passed through, not converted
    request = Img2ImgRequest(prompt="x", init_images=[init], inpainting_mask_weight=0.25, include_init_images=True,
                             clip_skip=2, steps=4, s_noise=0.9)  # fmt: skip
    p = processing.processing_from_request(request)
    assert (p.steps, p.override_settings["CLIP_stop_at_last_layers"], p.init_images) == (4, 2, [init])
    p.steps, p.prompt, p.override_settings["CLIP_stop_at_last_layers"] = 7, ["y", "z"], 3
    back = p.to_request()
    assert (back.steps, back.prompt, back.clip_skip, back.s_noise) == (7, "y", 3, 0.9)
    # fields a p does not carry come from the request unchanged
    assert (back.inpainting_mask_weight, back.include_init_images) == (0.25, True)
    assert request.steps == 4 and request.prompt == "x"  # the job's request itself is not rewritten


def test_shared_sd_model_in_process_is_the_jobs_model(app, tab_scripts):
    tab_scripts(Probe)
    a, b = title(app, "a"), title(app, "b")
    Probe.seen = []
    run(app, prompt="a cat", override_settings={"sd_model_checkpoint": b})
    run(app, prompt="a cat", override_settings={"sd_model_checkpoint": a})
    assert Probe.seen == [(B, B, "txt2img"), (A, A, "txt2img")]
    assert shared.sd_model.loaded_model is app.models.current  # outside a job: the loaded model

    # a job's model is its own, whatever the app's current one is (several stacks, a lease)
    other = tiny_models.tiny_loaded_model("sd1", seed=2)
    runner = scripts.runner_for(False)
    engine = _engine(other)
    bridge.run_job(runner, Txt2ImgRequest(**BASE), runner.resolve_script_args(), engine, JobContext(), other)
    assert Probe.models[-1] is other and app.models.current is not other


def _engine(model):
    def engine(request, hooks, ctx):
        return generate(model, request, ctx, EngineSettings(save_images=False), hooks)

    return engine


def test_on_model_loaded_fires_when_a_model_is_loaded(app, tab_scripts):
    tab_scripts(Probe)
    a, b = title(app, "a"), title(app, "b")
    app.models.load(a)
    loaded = []
    script_callbacks.on_model_loaded(lambda model: loaded.append(file_name(model)))
    app.models.load(b)
    app.models.load(b)  # already the current one: nothing new to hear of
    assert loaded == [B]
    Probe.seen = []
    run(app, prompt="a cat", override_settings={"sd_model_checkpoint": a})  # a job's checkpoint override
    assert loaded == [B, A] and Probe.seen == [(A, A, "txt2img")]


class Interrupter(scripts.Script):
    """process() of two jobs at once: each records its shared.state; the txt2img one interrupts itself."""

    seen: dict = {}
    barrier: threading.Barrier | None = None

    def title(self):
        return "Interrupter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        job = shared.state.job
        Interrupter.barrier.wait(timeout=60)  # both jobs are inside process() now
        if job == "txt2img":
            shared.state.interrupt()
        Interrupter.barrier.wait(timeout=60)
        Interrupter.seen[job] = (shared.state.job, shared.state.interrupted, shared.state.job_count)
        Interrupter.barrier.wait(timeout=60)


def test_two_jobs_shared_state_do_not_mix(tiny_model_factory):
    runner = scripts.ScriptRunner([scripts.ScriptClassData(Interrupter, "/x/i.py", "/x", None, "i")])
    Interrupter.seen, Interrupter.barrier = {}, threading.Barrier(3)
    contexts = {"txt2img": JobContext(), "other": JobContext()}
    results = {}

    def job(kind: str, n_iter: int) -> None:
        model = tiny_model_factory("sd1")
        request = Txt2ImgRequest(**{**BASE, "n_iter": n_iter})
        results[kind] = bridge.run_job(
            runner, request, runner.resolve_script_args(), _engine(model), contexts[kind], model, job=kind
        )

    threads = [threading.Thread(target=job, args=args) for args in (("txt2img", 1), ("other", 2))]
    for thread in threads:
        thread.start()
    for _ in range(3):  # the idle state meanwhile: no job, never interrupted
        Interrupter.barrier.wait(timeout=60)
        assert shared.state.job == "" and not shared.state.interrupted
    for thread in threads:
        thread.join(timeout=300)
    assert Interrupter.seen == {"txt2img": ("txt2img", True, 1), "other": ("other", False, 2)}
    assert contexts["txt2img"].interrupted and not contexts["other"].interrupted
    assert results["txt2img"].images == [] and len(results["other"].images) == 2


def test_cfg_denoiser_text_cond_replacement_gives_the_empty_prompts_image(app, tab_scripts):
    tab_scripts()  # no scripts: the callback runs on the job that builds no p

    def uncond_as_cond(params):
        params.text_cond = params.text_uncond

    empty = np.asarray(run(app, prompt="").pil_images[0], dtype=np.int16)
    cat = np.asarray(run(app, prompt="a cat").pil_images[0], dtype=np.int16)
    assert np.abs(cat - empty).mean() > 1  # the prompt matters on this model
    script_callbacks.on_cfg_denoiser(uncond_as_cond)
    swapped = np.asarray(run(app, prompt="a cat").pil_images[0], dtype=np.int16)
    assert np.abs(swapped - empty).max() <= 1


class Waiter(scripts.Script):
    """process() waits until the test interrupted the job through the queue, then records shared.state."""

    started = threading.Event()
    interrupted = threading.Event()
    seen: list = []

    def title(self):
        return "Waiter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        Waiter.started.set()
        Waiter.interrupted.wait(timeout=60)
        Waiter.seen.append(shared.state.interrupted)


def test_the_queues_interrupt_reaches_the_script_and_the_engine(app, tab_scripts):
    tab_scripts(Waiter)
    Waiter.started.clear()
    Waiter.interrupted.clear()
    Waiter.seen = []
    job = app.submit_generation(Txt2ImgRequest(**BASE, prompt="a cat"), script_call=ScriptCall("txt2img"))
    assert Waiter.started.wait(timeout=120)
    app.jobs.interrupt(job.id)
    Waiter.interrupted.set()
    result = job.wait(120)
    assert Waiter.seen == [True] and result.interrupted and result.images == []
