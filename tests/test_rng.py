import pytest
import torch

from modules import rng
from sdwebui.engine.samplers import create_scheduler, step_kwargs

SHAPE = (4, 8, 12)


def create_noise(shape, seed, subseed=-1, subseed_strength=0.0, seed_resize_from_h=-1, seed_resize_from_w=-1):
    """One image's initial noise, as the engine draws it."""
    return rng.ImageRNG(
        [seed],
        shape,
        subseeds=[subseed],
        subseed_strength=subseed_strength,
        seed_resize_from_h=seed_resize_from_h,
        seed_resize_from_w=seed_resize_from_w,
    ).first()[0]


def test_noise_is_a1111_cpu_randn():
    expected = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(1234))
    assert torch.equal(create_noise(SHAPE, 1234), expected)
    assert create_noise(SHAPE, 1234).dtype == torch.float32
    assert not torch.equal(create_noise(SHAPE, 1234), create_noise(SHAPE, 1235))


def test_image_noise_independent_of_batch_composition():
    batch = rng.ImageRNG([10, 11, 12], SHAPE)
    alone = rng.ImageRNG([11], SHAPE)
    first_batch, first_alone = batch.next(), alone.next()
    assert first_batch.shape == (3, *SHAPE)
    assert torch.equal(first_batch[1], first_alone[0])
    assert torch.equal(first_batch[0], create_noise(SHAPE, 10))
    for _ in range(3):  # ancestral step noise continues each image's own stream
        step_batch, step_alone = batch.next(), alone.next()
        assert torch.equal(step_batch[1], step_alone[0])
    assert not torch.equal(step_batch[0], step_batch[1])


def test_step_noise_differs_from_initial_noise():
    source = rng.ImageRNG([3], SHAPE)
    assert not torch.equal(source.next(), source.next())


def test_eta_noise_seed_delta_reseeds_step_noise():
    source = rng.ImageRNG([100, 200], SHAPE, eta_noise_seed_delta=31337)
    source.next()
    step = source.next()
    assert torch.equal(step[0], create_noise(SHAPE, 100 + 31337))
    assert torch.equal(step[1], create_noise(SHAPE, 200 + 31337))


def test_randn_like_checks_shape_and_dtype():
    source = rng.ImageRNG([1, 2], SHAPE)
    source.next()
    x = torch.zeros((2, *SHAPE), dtype=torch.float64)
    assert source.randn_like(x).dtype == torch.float64
    with pytest.raises(ValueError, match="expected shape"):
        source.randn_like(torch.zeros((3, *SHAPE)))


def test_diffusers_ancestral_steps_are_batch_independent():
    def run(seeds):
        source = rng.ImageRNG(seeds, SHAPE)
        scheduler = create_scheduler("Euler a", None, {})
        scheduler.set_timesteps(4)
        x = source.next() * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = 0.1 * scheduler.scale_model_input(x, t)
            x = scheduler.step(eps, t, x, **step_kwargs(scheduler, generator=source.generators)).prev_sample
        return x

    pair, single = run([7, 8]), run([8])
    assert torch.allclose(pair[1], single[0], atol=1e-5)
    assert not torch.allclose(pair[0], pair[1])


def test_variation_seed_slerp():
    base = create_noise(SHAPE, 1)
    sub = create_noise(SHAPE, 2)
    assert torch.equal(create_noise(SHAPE, 1, subseed=2, subseed_strength=0.0), base)
    full = create_noise(SHAPE, 1, subseed=2, subseed_strength=1.0)
    assert torch.allclose(full, sub, atol=1e-4)
    half = create_noise(SHAPE, 1, subseed=2, subseed_strength=0.5)
    assert not torch.allclose(half, base, atol=0.1) and not torch.allclose(half, sub, atol=0.1)
    assert half.std().item() == pytest.approx(1.0, abs=0.15)  # slerp keeps noise at unit scale
    assert torch.equal(half, create_noise(SHAPE, 1, subseed=2, subseed_strength=0.5))
    batch = rng.ImageRNG([1, 5], SHAPE, subseeds=[2, 6], subseed_strength=0.5).next()
    assert torch.equal(batch[0], half)


def test_variation_needs_resolved_subseed():
    with pytest.raises(ValueError, match="subseed"):
        create_noise(SHAPE, 1, subseed=-1, subseed_strength=0.3)


def test_resize_seed_same_size_is_plain_noise():
    h, w = SHAPE[1] * 8, SHAPE[2] * 8
    assert torch.equal(
        create_noise(SHAPE, 9, seed_resize_from_h=h, seed_resize_from_w=w), create_noise(SHAPE, 9)
    )


def test_resize_seed_from_smaller_pastes_centred():
    small = create_noise((4, 4, 6), 9)
    noise = create_noise(SHAPE, 9, seed_resize_from_h=32, seed_resize_from_w=48)
    assert noise.shape == SHAPE
    assert torch.equal(noise[:, 2:6, 3:9], small)
    assert not torch.equal(noise[:, 0:4, 0:6], small)


def test_resize_seed_from_larger_crops_centre():
    big = create_noise((4, 12, 16), 9)
    noise = create_noise(SHAPE, 9, seed_resize_from_h=96, seed_resize_from_w=128)
    assert torch.equal(noise, big[:, 2:10, 2:14])


def test_resize_seed_too_small():
    with pytest.raises(ValueError, match="seed_resize_from"):
        create_noise(SHAPE, 9, seed_resize_from_h=4, seed_resize_from_w=4)


def test_resolve_seed():
    assert rng.resolve_seed(42) == 42
    assert rng.resolve_seed("42") == 42
    values = {rng.resolve_seed(-1) for _ in range(20)}
    assert len(values) > 1 and all(0 <= v < 2**32 for v in values)
    assert 0 <= rng.resolve_seed(None) < 2**32
    for bad in (2**32, -2, "abc"):
        with pytest.raises(ValueError, match="seed"):
            rng.resolve_seed(bad)


def test_bad_shape():
    with pytest.raises(ValueError, match="channels, height, width"):
        create_noise((4, 8), 1)
    with pytest.raises(ValueError, match="at least one seed"):
        rng.ImageRNG([], SHAPE)
