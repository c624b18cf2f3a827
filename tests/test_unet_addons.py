"""The U-Net add-on point (sdwebui.engine.addons) through `generate` on the tiny SD1 model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdwebui.engine.addons import UNetCall, current_unet_call
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.passes import SamplingPass
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings

SIZE = 64


def request(**changes) -> Txt2ImgRequest:
    base = dict(prompt="a cat", negative_prompt="blurry", seed=42, steps=2, width=SIZE, height=SIZE)
    base.update(changes)
    return Txt2ImgRequest(sampler_name="Euler", **base)


def run(model, req, hooks=None):
    return generate(model, req, JobContext(), EngineSettings(save_images=False), hooks)


def residual_shapes(unet, call: UNetCall) -> tuple[list[torch.Size], torch.Size]:
    """Shapes (without the batch) of the down-block residuals and the mid-block output of `unet`."""
    down, mid = [], []
    handles = [unet.conv_in.register_forward_hook(lambda m, i, o: down.append(o.shape[1:]))]
    for block in unet.down_blocks:
        handles.append(block.register_forward_hook(lambda m, i, o: down.extend(r.shape[1:] for r in o[1])))
    handles.append(unet.mid_block.register_forward_hook(lambda m, i, o: mid.append(o.shape[1:])))
    try:
        unet(call.x, call.timestep, encoder_hidden_states=call.encoder_hidden_states)
    finally:
        for handle in handles:
            handle.remove()
    return down, mid[0]


class Recorder:
    def __init__(self):
        self.calls: list[UNetCall] = []

    def before_unet(self, call: UNetCall) -> None:
        self.calls.append(call)


class KnownResiduals(Recorder):
    """Adds fixed random residuals (the same for every row), as a ControlNet would."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.down: list[torch.Tensor] | None = None
        self.mid: torch.Tensor | None = None

    def before_unet(self, call: UNetCall) -> None:
        if self.down is None:
            down_shapes, mid_shape = residual_shapes(self.unet, call)
            gen = torch.Generator().manual_seed(0)
            self.down = [torch.randn(shape, generator=gen) * 0.5 for shape in down_shapes]
            self.mid = torch.randn(mid_shape, generator=gen) * 0.5
        rows = call.x.shape[0]
        call.add_residuals(
            [d.expand(rows, *d.shape) for d in self.down], self.mid.expand(rows, *self.mid.shape)
        )
        super().before_unet(call)


def test_residuals_change_the_output_exactly_as_diffusers_takes_them(tiny_sd1_model):
    unet = tiny_sd1_model.unet
    addon = KnownResiduals(unet)
    outputs = []
    hooks = EngineHooks(
        unet_addons=[addon], cfg_denoised=lambda args: outputs.append(args.model_output.clone())
    )
    with_residuals = run(tiny_sd1_model, request(), hooks)
    call = addon.calls[0]
    with torch.no_grad():
        direct = unet(
            call.x,
            call.timestep,
            encoder_hidden_states=call.encoder_hidden_states,
            down_block_additional_residuals=tuple(call.down_block_additional_residuals),
            mid_block_additional_residual=call.mid_block_additional_residual,
        ).sample
        plain = unet(call.x, call.timestep, encoder_hidden_states=call.encoder_hidden_states).sample
    assert torch.equal(outputs[0], direct)
    assert not torch.allclose(outputs[0], plain)
    without = run(tiny_sd1_model, request())
    assert not np.array_equal(np.asarray(with_residuals.images[0].image), np.asarray(without.images[0].image))


def test_two_addons_residuals_sum(tiny_sd1_model):
    unet = tiny_sd1_model.unet
    first, second = KnownResiduals(unet), KnownResiduals(unet)
    run(tiny_sd1_model, request(steps=1), EngineHooks(unet_addons=[first, second]))
    call = second.calls[0]
    assert torch.allclose(call.mid_block_additional_residual[0], 2 * first.mid)
    assert torch.allclose(call.down_block_additional_residuals[0][1], 2 * first.down[0])


def test_addon_that_adds_nothing_keeps_the_image(tiny_sd1_model):
    plain = run(tiny_sd1_model, request())
    seen = run(tiny_sd1_model, request(), EngineHooks(unet_addons=[Recorder()]))
    assert np.array_equal(np.asarray(plain.images[0].image), np.asarray(seen.images[0].image))


def test_addon_sees_steps_sigmas_passes_and_row_owners(tiny_sd1_model):
    addon = Recorder()
    extra = SamplingPass(width=SIZE, height=SIZE, steps=2, sampler_name="Euler", denoising_strength=0.5)
    req = request(prompt="a cat AND a dog :0.5", batch_size=2, n_iter=2, extra_passes=[extra])
    run(tiny_sd1_model, req, EngineHooks(unet_addons=[addon]))
    steps = [(c.pass_index, c.step, c.total_steps) for c in addon.calls]
    one_batch = [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]
    assert steps == one_batch * 2
    for batch, calls in enumerate((addon.calls[:4], addon.calls[4:])):
        a, b = 2 * batch, 2 * batch + 1
        for call in calls:
            owners = [(r.image_index, r.uncond, r.weight) for r in call.rows]
            assert owners == [
                (a, True, 1.0),
                (b, True, 1.0),
                (a, False, 1.0),
                (a, False, 0.5),
                (b, False, 1.0),
                (b, False, 0.5),
            ]
            assert call.x.shape[0] == len(call.rows) == call.encoder_hidden_states.shape[0]
        sigmas = [c.sigma for c in calls[:2]]
        assert sigmas[0] > sigmas[1] > 0


def test_without_guidance_only_cond_rows(tiny_sd1_model):
    addon = Recorder()
    run(tiny_sd1_model, request(cfg_scale=1.0, batch_size=2, steps=1), EngineHooks(unet_addons=[addon]))
    assert [(r.image_index, r.uncond) for r in addon.calls[0].rows] == [(0, False), (1, False)]


class CountingAttention:
    """Wraps every attention processor; counts the calls per step it sees through current_unet_call()."""

    def __init__(self, fail_at_step: int | None = None):
        self.steps: list[int] = []
        self.fail_at_step = fail_at_step

    def before_unet(self, call: UNetCall) -> None:
        if call.step == self.fail_at_step:
            raise RuntimeError("add-on failed")

    def wrap_attention(self, name, processor):
        def wrapped(attn, hidden_states, *args, **kwargs):
            self.steps.append(current_unet_call().step)
            return processor(attn, hidden_states, *args, **kwargs)

        return wrapped


def test_attention_wrappers_run_for_the_job_and_are_removed(tiny_sd1_model):
    unet = tiny_sd1_model.unet
    before = dict(unet.attn_processors)
    addon = CountingAttention()
    plain = run(tiny_sd1_model, request())
    wrapped = run(tiny_sd1_model, request(), EngineHooks(unet_addons=[addon]))
    per_step = len(before)
    assert addon.steps == [0] * per_step + [1] * per_step
    assert np.array_equal(np.asarray(plain.images[0].image), np.asarray(wrapped.images[0].image))
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())

    with pytest.raises(RuntimeError, match="add-on failed"):
        run(tiny_sd1_model, request(), EngineHooks(unet_addons=[CountingAttention(fail_at_step=1)]))
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())
