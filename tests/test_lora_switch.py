"""Switching a LoRA's weight in place (one step per weight, still undone bit-exactly) and the AutoV3 hash
kept in the app's hash cache (cache.json) across library instances."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sdwebui.engine.extra_networks import ACTIVE_KEY, LoraNetworksPatch, LoraTag
from sdwebui.models.hashing import HashCache
from sdwebui.models.lora import DeltaCache, LoraPatch, NetworkWeight, autov3_hash, build_index, load_network
from sdwebui.models.lora.library import LoraLibrary
from tests.lora_fixtures import kohya_name, lora_factors, save_safetensors, with_prefix
from tests.tiny_models import tiny_loaded_model

LINEAR = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # Linear(32, 32)
CONV3 = "down_blocks.0.resnets.0.conv1"  # Conv2d(32, 32, 3)
WIDE = "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj"  # Linear(64 -> 512)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.unet.state_dict().items()}


def _assert_bit_identical(model, state) -> None:
    for key, value in model.unet.state_dict().items():
        assert torch.equal(value.view(torch.uint8), state[key].view(torch.uint8)), key


def _networks(model, tmp_path, size=1.0):
    """Two plain LoRAs, both on LINEAR (so one weight takes two differences), the first also on CONV3/WIDE."""
    generator = torch.Generator().manual_seed(5)
    weights = {t: model.unet.get_submodule(t).weight for t in (LINEAR, CONV3, WIDE)}
    first, second = {}, {}
    for target, weight in weights.items():
        parts = lora_factors(weight, 4, generator)
        first.update(with_prefix(kohya_name(target), {k: v * size for k, v in parts.items()}))
    second.update(with_prefix(kohya_name(LINEAR), lora_factors(weights[LINEAR], 2, generator)))
    index = build_index(model)
    return [
        load_network(save_safetensors(tensors, tmp_path / f"{name}.safetensors"), index)
        for name, tensors in (("first", first), ("second", second))
    ]


@pytest.mark.parametrize("by_subtraction", [False, True], ids=["from-copy", "by-subtraction"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_switching_weights_in_place_matches_a_fresh_apply_and_restores_bit_exactly(
    tmp_path, dtype, by_subtraction
):
    """From the copy (weights in RAM) a switch gives a fresh apply's very bits; by subtraction (an
    accelerator's way) it is within a rounding of it; either way the undo is bit-exact."""
    model, twin = (tiny_loaded_model("sd1", seed=4) for _ in range(2))  # the twin takes fresh applies
    model.unet.to(dtype)
    twin.unet.to(dtype)
    first, second = _networks(model, tmp_path / "a", size=3.0)  # big: many elements need a correction
    twin_first, twin_second = _networks(twin, tmp_path / "b", size=3.0)
    original = _state(model)
    networks = [NetworkWeight(first, unet=1.0), NetworkWeight(second, unet=0.5)]
    undo = LoraPatch(networks, by_subtraction=by_subtraction).apply(model)
    for a, b in ((0.5, 0.5), (-0.7, 1.3), (2.0, -1.0)):
        switched = LoraPatch([NetworkWeight(first, unet=a), NetworkWeight(second, unet=b)])
        assert switched.reweight(undo)
        now = _state(model)
        fresh_undo = LoraPatch([NetworkWeight(twin_first, unet=a), NetworkWeight(twin_second, unet=b)]).apply(
            twin
        )
        fresh = _state(twin)
        fresh_undo()
        for key in (f"{t}.weight" for t in (LINEAR, CONV3, WIDE)):
            scale = fresh[key].float().abs().max().item()
            torch.testing.assert_close(
                now[key].float(), fresh[key].float(), rtol=0, atol=TOLERANCE[dtype] * scale
            )
            assert by_subtraction or torch.equal(now[key].view(torch.uint8), fresh[key].view(torch.uint8))
            assert not torch.equal(now[key], original[key])
    undo()
    _assert_bit_identical(model, original)


def test_a_switch_to_other_networks_or_targets_is_refused_untouched(tmp_path):
    model = tiny_loaded_model("sd1", seed=4)
    first, second = _networks(model, tmp_path)
    original = _state(model)
    undo = LoraPatch([NetworkWeight(first, unet=1.0)]).apply(model)
    patched = _state(model)
    for other in (
        [NetworkWeight(second, unet=1.0)],  # another file
        [NetworkWeight(first, unet=1.0), NetworkWeight(second, unet=1.0)],  # one more
        [NetworkWeight(first, unet=0.0)],  # weight 0 patches nothing: not the same targets
    ):
        assert not LoraPatch(other).reweight(undo)
        _assert_bit_identical(model, patched)
    undo()
    _assert_bit_identical(model, original)


def test_a_jobs_later_batch_with_a_new_weight_steps_in_place(tmp_path):
    """The job's active networks switch 1 -> 0.25 without undoing; the job's end restores exactly."""
    model = tiny_loaded_model("sd1", seed=4)
    first, _ = _networks(model, tmp_path)
    original = _state(model)
    cache = DeltaCache()
    lease_patch = LoraNetworksPatch(lambda name, m: first if name == "first" else None, cache)
    end_of_job = lease_patch.apply(model)
    active = model.extra[ACTIVE_KEY]
    assert active.activate([LoraTag("first", 1.0, 1.0)])
    undo = active._undo
    assert active.activate([LoraTag("first", 0.25, 0.25)])
    assert active._undo is undo  # the same patch, stepped
    switched = _state(model)
    end_of_job()
    _assert_bit_identical(model, original)
    with torch.no_grad():
        fresh_undo = LoraPatch([NetworkWeight(first, 0.25, 0.25)], cache).apply(model)
    fresh = _state(model)
    fresh_undo()
    key = f"{LINEAR}.weight"
    torch.testing.assert_close(switched[key], fresh[key], rtol=1e-5, atol=1e-6)
    _assert_bit_identical(model, original)


def test_autov3_hash_is_kept_in_the_hash_cache_until_the_file_changes(tmp_path):
    model = tiny_loaded_model("sd1", seed=4)
    folder = tmp_path / "Lora"
    _networks(model, folder)
    path = folder / "first.safetensors"
    cache_file = tmp_path / "cache.json"
    digest = autov3_hash(path)
    library = LoraLibrary([folder], HashCache(cache_file))
    assert library.network(library.find("first"), model).hash == digest
    saved = json.loads(cache_file.read_text())
    assert saved["hashes-addnet"][str(path.resolve())]["sha256"] == digest
    # a cache hit does not read the file: a planted digest for this size and mtime is what comes back
    saved["hashes-addnet"][str(path.resolve())]["sha256"] = "ab" * 32
    cache_file.write_text(json.dumps(saved))
    again = LoraLibrary([folder], HashCache(cache_file))
    assert again.network(again.find("first"), model).shorthash == "ab" * 6
    # a new mtime invalidates it: the file is hashed again (and the cache corrected)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = LoraLibrary([folder], HashCache(cache_file))
    assert third.network(third.find("first"), model).hash == digest
    assert json.loads(cache_file.read_text())["hashes-addnet"][str(path.resolve())]["sha256"] == digest


def test_a_network_whose_file_changed_since_reading_writes_no_hash(tmp_path):
    model = tiny_loaded_model("sd1", seed=4)
    first, _ = _networks(model, tmp_path)
    first.path.unlink()
    assert first.shorthash == ""  # not the digest of some other file, and no error in the job


def test_dense_cpu_differences_make_room_from_other_files_never_their_own(tmp_path):
    """(Undone by subtraction: no copies take the room here.)"""
    model = tiny_loaded_model("sd1", seed=4)
    first, second = _networks(model, tmp_path)
    linear = model.unet.get_submodule(LINEAR).weight.numel() * 4
    cache = DeltaCache(limit_bytes=2 * linear)  # room for two LINEAR-sized differences, not CONV3's
    LoraPatch([NetworkWeight(first)], cache, by_subtraction=True).apply(model)()
    assert {key.target for key in cache._entries} == {f"unet.{LINEAR}"}  # the rest did not fit
    LoraPatch([NetworkWeight(second)], cache, by_subtraction=True).apply(model)()  # fits beside it
    assert len(cache) == 2 and cache.bytes == 2 * linear
    third = load_network(
        save_safetensors(
            with_prefix(
                kohya_name(CONV3), lora_factors(model.unet.get_submodule(CONV3).weight, 2, torch.Generator())
            ),
            tmp_path / "third.safetensors",
        ),
        build_index(model),
    )
    LoraPatch([NetworkWeight(third)], cache, by_subtraction=True).apply(
        model
    )()  # 9 * LINEAR: more than the limit, kept out
    assert len(cache) == 2
    small = DeltaCache(limit_bytes=linear)
    LoraPatch([NetworkWeight(first)], small, by_subtraction=True).apply(model)()
    LoraPatch([NetworkWeight(second)], small, by_subtraction=True).apply(
        model
    )()  # the other file's entry makes room
    assert [key.file for key in small._entries] == [second.identity]


def test_copies_for_the_undo_come_out_of_the_same_ram_budget_first(tmp_path):
    """Copies of patched weights in RAM take room before cached differences; weights beyond the budget are
    undone by subtraction; either way the model comes back bit-exactly and the room is given back."""
    model = tiny_loaded_model("sd1", seed=4)
    first, _ = _networks(model, tmp_path)
    original = _state(model)
    sizes = {t: model.unet.get_submodule(t).weight.nbytes for t in (LINEAR, CONV3, WIDE)}
    cache = DeltaCache(limit_bytes=sizes[CONV3] + sizes[WIDE])  # not for all three copies
    undo = LoraPatch([NetworkWeight(first, unet=1.0)], cache).apply(model)
    kinds = {target: type(record).__name__ for target, record in undo.weight_free.items()}
    assert sorted(kinds.values()) == ["Copied", "Copied", "Subtracted"], kinds
    assert cache.reserved == undo.reserved <= cache.limit_bytes
    assert cache.bytes + cache.reserved <= cache.limit_bytes  # differences evicted for the copies
    assert LoraPatch([NetworkWeight(first, unet=0.25)], cache).reweight(undo)
    undo()
    _assert_bit_identical(model, original)
    assert cache.reserved == 0
    roomy = DeltaCache(limit_bytes=4 * sum(sizes.values()))
    undo = LoraPatch([NetworkWeight(first, unet=1.0)], roomy).apply(model)
    assert {type(r).__name__ for r in undo.weight_free.values()} == {"Copied"}
    assert roomy.bytes == sum(sizes.values())  # and every difference cached beside the copies
    undo()
    _assert_bit_identical(model, original)
