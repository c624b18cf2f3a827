import json
import socket

import pytest
import safetensors.torch
import torch

from sdwebui.models.model import ModelFamily
from tests import tiny_models


def test_network_guard_blocks_external_but_allows_loopback():
    with pytest.raises(RuntimeError, match="network access blocked"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with pytest.raises(RuntimeError, match="network access blocked"):
        socket.socket().connect(("8.8.8.8", 53))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    client.close()
    server.close()


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_tiny_models_are_deterministic_and_run(family):
    a = tiny_models.tiny_loaded_model(family, seed=0)
    b = tiny_models.tiny_loaded_model(family, seed=0)
    assert torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    assert a.vae_scale_factor == 8 and a.latent_channels == 4
    assert a.is_inpainting == family.value.endswith("-inpaint")
    assert (
        len(a.tokenizers)
        == len(a.text_encoders)
        == (2 if family in (ModelFamily.SDXL, ModelFamily.SDXL_INPAINT) else 1)
    )
    assert a.tokenizers[0]("a photo of a cat").input_ids[:3] == [49406, 320, 1125]
    image = a.vae.decode(torch.zeros(1, 4, 8, 8)).sample
    assert image.shape == (1, 3, 64, 64)


def test_sd2_v_and_sdxl_specifics(tiny_sd2v_model, tiny_sdxl_model):
    assert tiny_sd2v_model.prediction_type == "v_prediction"
    assert tiny_sd2v_model.tokenizers[0].pad_token_id == 0
    assert tiny_sd2v_model.text_encoders[0].config.hidden_act == "gelu"
    assert tiny_sdxl_model.unet.config.addition_embed_type == "text_time"
    assert tiny_sdxl_model.tokenizers[1].pad_token == "!"
    ids = tiny_sdxl_model.tokenizers[1]("a cat", return_tensors="pt").input_ids
    assert tiny_sdxl_model.text_encoders[1](ids).text_embeds.shape == (1, 32)


def test_fixture_copies_are_independent(tiny_sd1_model, tiny_model_factory):
    other = tiny_model_factory("sd1")
    tiny_sd1_model.unet.conv_in.weight.data.zero_()
    assert other.unet.conv_in.weight.abs().sum() > 0


def test_single_file_writer_uses_ldm_layout(tmp_path, tiny_sd1_model):
    path = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "m.safetensors")
    keys = set(safetensors.torch.load_file(path))
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in keys
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["family"] == "sd1" and sidecar["unet"]["block_out_channels"] == [32, 64]
    ckpt = tiny_models.write_single_file(tiny_sd1_model, tmp_path / "m.ckpt")
    assert set(torch.load(ckpt, weights_only=True)["state_dict"]) == keys
