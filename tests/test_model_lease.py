"""Model leases (sdwebui.models.lease): a job's VAE override and weight patches never outlive the job."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from modules import cmd_args
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.manager import ModelManager
from sdwebui.models.patches import VaeOverride, WeightDelta
from sdwebui.services import build_services
from tests import tiny_models

VAE = "other.safetensors"
UNET_WEIGHT = "conv_in.weight"


def request(**changes) -> Txt2ImgRequest:
    base = dict(prompt="a red cube", seed=777, steps=2, width=64, height=64, sampler_name="Euler")
    return Txt2ImgRequest(**{**base, **changes})


def pixels(result) -> np.ndarray:
    first = result.images[0]
    return np.asarray(getattr(first, "image", first))  # a GeneratedImage record or a PIL image


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def assert_bit_identical(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k, v in before.items() if not (after[k].dtype == v.dtype and torch.equal(after[k], v))]
    assert not changed, f"not restored: {changed[:3]}"


@pytest.fixture
def data_dir(tmp_path, tiny_model_factory):
    tiny_models.write_single_file(
        tiny_model_factory("sd1"), tmp_path / "models" / "Stable-diffusion" / "alpha.safetensors"
    )
    other = tiny_models.tiny_loaded_model("sd1", seed=7).vae
    tiny_models.write_vae_file(other, tmp_path / "models" / "VAE" / VAE)
    return tmp_path


@pytest.fixture
def manager(data_dir):
    return ModelManager(
        [data_dir / "models" / "Stable-diffusion"],
        [data_dir / "models" / "VAE"],
        data_dir / "cache.json",
        include_default_dir=False,
    )


@pytest.fixture
def services(data_dir):
    app = build_services(cmd_args.parse_args(["--data-dir", str(data_dir), "--use-cpu", "all"]))
    yield app
    app.shutdown()


def run(services, **changes):
    job = services.submit_generation(request(**changes))
    return job, job.wait(300)


def test_a_vae_override_is_for_its_job_only(services):
    plain_job, plain = run(services)
    shared = services.models.current
    own_vae = shared.vae
    override_job, override = run(services, override_settings={"sd_vae": VAE})
    assert not np.array_equal(pixels(plain), pixels(override)), "the override's VAE was not used"
    assert f"VAE: {VAE}" in override.infotexts[0] and "VAE:" not in plain.infotexts[0]
    assert services.model_info(override_job)["sd_vae_name"] == VAE
    # the shared model kept its own VAE: the next plain job decodes exactly as the first one
    assert services.models.current is shared and shared.vae is own_vae and shared.vae_name is None
    again_job, again = run(services)
    assert np.array_equal(pixels(again), pixels(plain))
    assert services.model_info(again_job)["sd_vae_name"] is None
    assert services.model_info(plain_job)["sd_model_name"] == "alpha"
    # changing the sd_vae setting is a real change of the shared model: plain jobs then decode with it
    services.set_options({"sd_vae": VAE}, timeout=300)
    _, with_setting = run(services)
    assert np.array_equal(pixels(with_setting), pixels(override))
    assert shared.vae_name == VAE
    # and a job's "None" override gives the checkpoint's own VAE back for that job only
    _, own = run(services, override_settings={"sd_vae": "None"})
    assert np.array_equal(pixels(own), pixels(plain)) and shared.vae_name == VAE


def test_the_job_model_is_a_view_the_shared_model_never_sees(manager):
    shared = manager.load("alpha")
    before = (shared.vae, shared.vae_name, dict(shared.extra))
    with manager.lease(shared, vae=VAE) as model:
        assert model is not shared and model.unet is shared.unet  # same weights, own attributes
        assert model.vae_name == VAE and model.vae is not shared.vae and model.extra["vae_hash"]
        assert (shared.vae, shared.vae_name, shared.extra) == before
    assert (shared.vae, shared.vae_name, shared.extra) == before


def test_an_unknown_vae_is_refused_before_anything_changes(manager):
    shared = manager.load("alpha")
    with pytest.raises(CheckpointLoadError, match="missing.safetensors") as caught:
        manager.lease(shared, vae="missing.safetensors")
    assert caught.value.field == "sd_vae" and shared.vae_name is None


def test_a_weight_patch_changes_the_image_and_is_restored_bit_exactly_after_an_exception(manager):
    shared = manager.load("alpha")
    settings = EngineSettings(save_images=False)
    plain = generate(shared, request(), JobContext(), settings)
    before = state_of(shared.unet)
    weight = dict(shared.unet.named_parameters())[UNET_WEIGHT]
    patch = WeightDelta(
        "unet", {UNET_WEIGHT: torch.randn(weight.shape, generator=torch.Generator().manual_seed(1))}
    )
    with pytest.raises(RuntimeError, match="job failed"):
        with manager.lease(shared, patches=[patch]) as model:
            assert not torch.equal(weight, before[UNET_WEIGHT])  # patched in place, in the shared module
            patched = generate(model, request(), JobContext(), settings)
            assert not np.array_equal(pixels(patched), pixels(plain))
            raise RuntimeError("job failed")
    assert_bit_identical(shared.unet, before)
    assert np.array_equal(pixels(generate(shared, request(), JobContext(), settings)), pixels(plain))


def test_fp16_weights_and_an_interrupt_are_restored_bit_exactly(tiny_model_factory):
    model = tiny_model_factory("sd1")
    encoder = model.text_encoders[0].to(torch.float16)
    name, param = next(iter(encoder.named_parameters()))
    before = state_of(encoder)
    # a tiny delta in fp16: adding it and subtracting it again would not give the original bits back
    patch = WeightDelta("text_encoders.0", {name: torch.full(param.shape, 1e-3)}, scale=0.37)
    from sdwebui.models.lease import ModelLease

    with pytest.raises(KeyboardInterrupt):
        with ModelLease(model, [patch]):
            assert param.dtype == torch.float16 and not torch.equal(param, before[name])
            raise KeyboardInterrupt
    assert_bit_identical(encoder, before)


def test_a_failing_patch_undoes_the_ones_before_it_and_frees_the_lease(manager):
    shared = manager.load("alpha")
    before = state_of(shared.unet)
    good = WeightDelta(
        "unet", {UNET_WEIGHT: torch.ones_like(dict(shared.unet.named_parameters())[UNET_WEIGHT])}
    )
    bad = WeightDelta("unet", {"no.such.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="no.such.weight"):
        with manager.lease(shared, patches=[good, bad]):
            pytest.fail("entered a lease whose patch failed")
    assert_bit_identical(shared.unet, before)
    entered = threading.Event()

    def lease_again() -> None:
        with manager.lease(shared):
            entered.set()

    other = threading.Thread(target=lease_again)
    other.start()
    other.join(30)
    assert entered.is_set(), "the lock of the failed lease was not released"


def test_two_leases_of_one_model_are_serialized(manager):
    shared = manager.load("alpha")
    order: list[str] = []
    trying = threading.Event()

    def second() -> None:
        trying.set()
        with manager.lease(shared, vae=VAE):
            order.append("second enters")

    with manager.lease(shared):
        order.append("first enters")
        thread = threading.Thread(target=second)
        thread.start()
        assert trying.wait(30)
        time.sleep(0.3)  # give the second lease the chance to (wrongly) enter
        order.append("first exits")
    thread.join(60)
    assert order == ["first enters", "first exits", "second enters"]


def test_a_nested_lease_on_the_same_thread_stacks_and_unwinds(manager):
    shared = manager.load("alpha")
    before = state_of(shared.unet)
    weight = dict(shared.unet.named_parameters())[UNET_WEIGHT]
    one = WeightDelta("unet", {UNET_WEIGHT: torch.ones_like(weight)})
    with manager.lease(shared, patches=[one]):
        once = weight.detach().clone()
        with manager.lease(shared, vae=VAE, patches=[one]) as inner:  # enters at once: no deadlock
            assert torch.equal(weight, once + 1) and inner.vae_name == VAE
        assert torch.equal(weight, once)
    assert_bit_identical(shared.unet, before)


def test_vae_override_patch_undo_restores_the_view():
    from sdwebui.models.lease import ModelLease

    model = tiny_models.tiny_loaded_model("sd1")
    other = tiny_models.tiny_loaded_model("sd1", seed=3).vae
    lease = ModelLease(model, [VaeOverride("x.safetensors", other, "0123456789")])
    with lease as view:
        assert view.vae is other and view.extra["vae_hash"] == "0123456789"
        assert lease.used.vae_name == "x.safetensors" and lease.used.vae_hash == "0123456789"
    assert model.vae is not other and "vae_hash" not in model.extra and lease.model is None


def test_a_sub_run_asking_for_the_held_model_reuses_it_and_patches_apply_once(manager):
    from sdwebui.jobs.generation import GenerationJob

    shared = manager.load("alpha")
    weight = dict(shared.unet.named_parameters())[UNET_WEIGHT]
    original = weight.detach().clone()
    patch = WeightDelta("unet", {UNET_WEIGHT: torch.ones_like(weight)})
    gen = GenerationJob(request(), "txt2img")
    with gen.holding(manager.lease(shared, patches=[patch])) as outer:
        with gen.holding(manager.lease(shared, patches=[patch])) as same:  # a script's sub-run
            assert same is outer and torch.equal(weight, original + 1)  # not patched twice
        with gen.holding(manager.lease(shared, vae=VAE, patches=[patch])) as other:
            assert other is not outer and gen.model is other and gen.ran_on.vae_name == VAE
            assert torch.equal(weight, original + 1)  # the outer patch suspended, this one applied
        with gen.holding(manager.lease(shared, vae=VAE)):
            assert torch.equal(weight, original)  # a sub-run without the patch does not see it
        assert gen.model is outer and torch.equal(weight, original + 1)
    assert gen.lease is None and gen.ran_on.vae_name == VAE  # the last sub-run's model, for the info
    assert torch.equal(weight, original)


def test_the_providers_lease_by_title(services):
    with services.models.lease("alpha", vae=VAE) as model:
        shared = services.models.current
        assert model.info.name == "alpha" and model.vae_name == VAE and shared.vae_name is None
    with services.models.lease(None, base_vae=VAE) as model:  # the sd_vae setting: a real change
        assert model.vae_name == VAE and services.models.current.vae_name == VAE
