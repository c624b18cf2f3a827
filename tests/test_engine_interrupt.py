"""Interrupt inside a step: between the U-Net's blocks, the VAE decoder's blocks / images, and the VAE
encoder's blocks (img2img init images).

Deterministic: the interrupt is requested from inside a block (a forward pre-hook of the test), and the test
counts the block calls that still ran, so nothing depends on the machine's speed.
"""

from __future__ import annotations

import pytest
from PIL import Image

from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import Img2ImgRequest, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings


def request(**changes) -> Txt2ImgRequest:
    base = dict(prompt="a cat", seed=42, steps=3, width=64, height=64, sampler_name="Euler")
    return Txt2ImgRequest(**{**base, **changes})


def run(model, req: Txt2ImgRequest, ctx: JobContext):
    return generate(model, req, ctx, EngineSettings(save_images=False))


class BlockCalls:
    """Counts forward calls of modules; `interrupt_at` = (module, call number) requests the interrupt."""

    def __init__(self, ctx: JobContext, modules: dict[str, object], interrupt_at: tuple[str, int]):
        self.ctx, self.counts, self.interrupt_at = ctx, dict.fromkeys(modules, 0), interrupt_at
        self.handles = [
            module.register_forward_pre_hook(self._hook(name)) for name, module in modules.items()
        ]

    def _hook(self, name: str):
        def hook(module, args):
            self.counts[name] += 1
            if (name, self.counts[name]) == self.interrupt_at:
                self.ctx.interrupt()  # as POST /interrupt does, from another thread, mid-forward

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.fixture
def unet_calls(tiny_sd1_model):
    unet = tiny_sd1_model.unet
    modules = {"down0": unet.down_blocks[0], "mid": unet.mid_block, "up_last": unet.up_blocks[-1]}
    ctx = JobContext()
    calls = BlockCalls(ctx, modules, interrupt_at=("down0", 2))  # in the first block of step 2
    yield ctx, calls
    calls.remove()


def test_interrupt_stops_the_unet_between_blocks_of_a_step(tiny_sd1_model, unet_calls):
    ctx, calls = unet_calls
    result = run(tiny_sd1_model, request(steps=5), ctx)
    # step 1 ran fully; step 2 stopped after its first down block: no mid or up block of step 2 ran
    assert calls.counts == {"down0": 2, "mid": 1, "up_last": 1}
    assert result.interrupted
    # as A1111, the interrupted batch is decoded from the last finished step's estimate
    assert len(result.images) == 1 and result.images[0].image.size == (64, 64)


def test_hooks_are_gone_after_the_job(tiny_sd1_model):
    unet = tiny_sd1_model.unet
    before = [len(block._forward_pre_hooks) for block in (*unet.down_blocks, unet.mid_block, *unet.up_blocks)]
    run(tiny_sd1_model, request(steps=1), JobContext())
    after = [len(block._forward_pre_hooks) for block in (*unet.down_blocks, unet.mid_block, *unet.up_blocks)]
    assert after == before


def test_interrupt_during_the_vae_decode_stops_it(tiny_sd1_model):
    decoder = tiny_sd1_model.vae.decoder
    ctx = JobContext()
    modules = {"up0": decoder.up_blocks[0], "up_last": decoder.up_blocks[-1]}
    calls = BlockCalls(ctx, modules, interrupt_at=("up0", 1))  # in the first decoder block of image 1
    try:
        result = run(tiny_sd1_model, request(steps=2, batch_size=2, n_iter=2), ctx)
    finally:
        calls.remove()
    # image 1's decode stopped at its next block; image 2 of the batch was never decoded; no batch 2
    assert calls.counts == {"up0": 1, "up_last": 0}
    assert result.interrupted and result.images == []


def test_interrupt_before_the_decode_still_decodes_the_partial_batch(tiny_sd1_model):
    ctx = JobContext()
    ctx.on_step = lambda info: ctx.interrupt() if info.step == 1 else None
    result = run(tiny_sd1_model, request(steps=4, batch_size=2), ctx)
    assert result.interrupted and len(result.images) == 2


def test_interrupt_during_the_img2img_vae_encode_stops_it(tiny_sd1_model):
    encoder, unet = tiny_sd1_model.vae.encoder, tiny_sd1_model.unet
    ctx = JobContext()
    modules = {"down0": encoder.down_blocks[0], "down_last": encoder.down_blocks[-1], "unet": unet.mid_block}
    calls = BlockCalls(ctx, modules, interrupt_at=("down0", 1))  # in the encoder's first block
    req = Img2ImgRequest(
        prompt="a cat", seed=1, steps=4, width=64, height=64, sampler_name="Euler",
        init_images=[Image.new("RGB", (64, 64), "red")], denoising_strength=0.5,
    )  # fmt: skip
    try:
        result = run(tiny_sd1_model, req, ctx)
    finally:
        calls.remove()
    # the encode stopped at its next block; no sampling step and no decode ran
    assert calls.counts == {"down0": 1, "down_last": 0, "unet": 0}
    assert result.interrupted and result.images == []
    # the encoder's hooks are gone, and the same plan runs normally without an interrupt
    assert all(not block._forward_pre_hooks for block in encoder.down_blocks)
    assert len(run(tiny_sd1_model, req, JobContext()).images) == 1
