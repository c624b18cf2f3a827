"""The default model's procedural data set and the pixel attribute checker (no model needed)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sdwebui.models.default_model import dataset
from sdwebui.models.default_model.attributes import colour_fraction, read_attributes
from sdwebui.models.default_model.quality import full_prompt, score


def test_samples_are_deterministic_per_seed_and_index():
    a_image, a_caption, a_scene = dataset.sample(7, 42)
    b_image, b_caption, b_scene = dataset.sample(7, 42)
    assert a_caption == b_caption and a_scene == b_scene
    assert np.array_equal(np.asarray(a_image), np.asarray(b_image))
    other = [dataset.sample(8, 42)[1] for _ in range(1)] + [dataset.sample(7, i)[1] for i in range(43, 50)]
    assert any(c != a_caption for c in other)


def test_images_are_64px_rgb_with_the_background_colour_in_the_corner():
    image, _, scene = dataset.sample(0, 3)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == dataset.PALETTE[scene.background]


def test_caption_grammar():
    scene = dataset.Scene(
        shapes=(dataset.ShapeSpec("circle", "red", "small", "left"),), background="blue", offsets=((0, 0),)
    )
    assert dataset.caption(scene) == "a small red circle on the left, blue background"
    parts = dataset.CaptionParts(size=False, colour=False, position=True, background=False)
    assert dataset.caption(scene, parts) == "a circle on the left"
    big_orange = dataset.Scene(
        shapes=(dataset.ShapeSpec("square", "orange", "large", "center"),),
        background="white",
        offsets=((0, 0),),
    )
    assert dataset.caption(big_orange, dataset.CaptionParts(size=False)) == (
        "an orange square in the center, white background"
    )


def test_covers_the_required_vocabulary_and_holds_some_combinations_out():
    assert len(dataset.COLOURS) >= 6 and {"circle", "square", "triangle"} <= set(dataset.SHAPES)
    rng = random.Random(0)
    seen = [dataset.random_scene(rng, two_shape_fraction=0.0) for _ in range(3000)]
    assert {s.main.colour for s in seen} == set(dataset.COLOURS)
    assert {s.main.position for s in seen} == set(dataset.POSITIONS)
    assert not any(
        dataset.combo_is_held_out(s.main.shape, s.main.colour, s.background, s.main.position) for s in seen
    )
    held = dataset.held_out_scenes(50)
    assert all(
        dataset.combo_is_held_out(s.main.shape, s.main.colour, s.background, s.main.position) for s in held
    )


def test_checker_reads_ground_truth_scenes_exactly():
    rng = random.Random(1)
    scenes = [dataset.random_scene(rng, two_shape_fraction=0.0, allow_held_out=True) for _ in range(300)]
    scores = score([dataset.render(s) for s in scenes], scenes)
    assert scores == {"background": 1.0, "colour": 1.0, "position": 1.0, "shape": 1.0, "size": 1.0}


def test_checker_notices_a_wrong_image():
    red_left = dataset.held_out_scenes(1)[0]
    image = dataset.render(red_left)
    found = read_attributes(image.transpose(0))  # mirrored left <-> right
    expected_position = {"left": "right", "right": "left", "center": "center"}[red_left.main.position]
    assert found.position == expected_position
    blank = dataset.render(dataset.Scene(shapes=(), background="green", offsets=()))
    assert read_attributes(blank).colour is None and read_attributes(blank).background == "green"


def test_colour_fraction_counts_only_inside_the_mask():
    scene = dataset.Scene(
        shapes=(dataset.ShapeSpec("square", "red", "large", "left"),), background="blue", offsets=((0, 0),)
    )
    image = dataset.render(scene)
    left = np.zeros((64, 64), dtype=bool)
    left[:, :32] = True
    assert colour_fraction(image, "red", ~left) == 0.0
    assert colour_fraction(image, "red", left) == pytest.approx(30 * 30 / (64 * 32), abs=0.03)
    assert "red square on the left" in full_prompt(scene)
