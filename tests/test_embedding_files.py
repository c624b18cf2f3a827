"""Textual-inversion files read by the LoRA library's reader: A1111 .pt with training fields, safetensors
emb_params and SDXL clip_l/clip_g, diffusers concept .bin, the safe unpickler, files that are no embedding."""

from __future__ import annotations

import hashlib

import pytest
import torch

from sdwebui.models.lora import EmbeddingError, read_embedding
from tests.lora_fixtures import save_code_pickle, save_safetensors


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_a1111_pt_embedding_with_training_fields(tmp_path):
    vectors = torch.nn.Parameter(torch.randn(3, 768, generator=gen(80)))
    path = tmp_path / "my-style.pt"
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vectors},
        "name": "my-style",
        "step": 1500,
        "sd_checkpoint": "4c86efd062",
        "sd_checkpoint_name": "v1-5-pruned",
    }
    torch.save(data, path)
    embedding = read_embedding(path)
    assert (embedding.name, embedding.vectors, embedding.shape, embedding.step) == ("my-style", 3, 768, 1500)
    assert (embedding.sd_checkpoint, embedding.sd_checkpoint_name) == ("4c86efd062", "v1-5-pruned")
    assert torch.equal(embedding.for_encoder("", 768), vectors.detach())
    assert embedding.for_encoder("", 1024) is None
    assert embedding.hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert embedding.shorthash == embedding.hash[:12]


def test_safetensors_emb_params_and_sdxl_clip_l_clip_g(tmp_path):
    single = save_safetensors({"emb_params": torch.ones(2, 1024)}, tmp_path / "sd2.safetensors")
    embedding = read_embedding(single)
    assert (embedding.vectors, embedding.shape, embedding.step, embedding.sd_checkpoint) == (
        2,
        1024,
        None,
        None,
    )
    clip_l, clip_g = torch.randn(4, 768, generator=gen(81)), torch.randn(4, 1280, generator=gen(82))
    xl = read_embedding(save_safetensors({"clip_l": clip_l, "clip_g": clip_g}, tmp_path / "xl.safetensors"))
    assert (xl.name, xl.vectors, xl.shape) == ("xl", 4, 2048)
    assert torch.equal(xl.for_encoder("clip_l", 768), clip_l) and torch.equal(
        xl.for_encoder("clip_g", 1280), clip_g
    )


def test_diffusers_concept_bin_with_one_vector(tmp_path):
    path = tmp_path / "concept.bin"
    torch.save({"<cat-toy>": torch.ones(768)}, path)
    embedding = read_embedding(path)
    assert (embedding.vectors, embedding.shape) == (1, 768)


def test_embedding_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran.txt"
    with pytest.raises(EmbeddingError, match=r"evil\.pt.*refused"):
        read_embedding(save_code_pickle(tmp_path / "evil.pt", marker))
    assert not marker.exists()


def test_file_that_is_no_embedding_is_an_error_naming_it(tmp_path):
    path = save_safetensors({"a": torch.ones(2), "b": torch.ones(2)}, tmp_path / "two.safetensors")
    with pytest.raises(EmbeddingError, match=r"two\.safetensors: not an embedding"):
        read_embedding(path)
    (tmp_path / "trunc.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(EmbeddingError, match="trunc.safetensors"):
        read_embedding(tmp_path / "trunc.safetensors")
