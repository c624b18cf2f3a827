"""Textual inversion end to end on the tiny models: discovery, the vectors in the conditioning (checked against an
independent computation: the vectors written into a copy of the encoder's vocabulary, as diffusers'
`load_textual_inversion` does), chunking and token counts, skipped widths, TI hashes, the API over real HTTP."""

from __future__ import annotations

import copy
import hashlib
import json
import os

import numpy as np
import pytest
import requests
import torch

from sdwebui.engine.conditioning import (
    CHUNK_LENGTH,
    EmbeddingVocabulary,
    PromptEncoder,
    count_tokens,
    embedding_token_counter,
    tokenize_prompt,
)
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.embeddings_library import EmbeddingLibrary
from tests import tiny_models
from tests.api_server import start_server, write_tiny_checkpoints
from tests.lora_fixtures import save_code_pickle, save_safetensors

WIDTH = 32  # the tiny encoders' hidden size (CLIP-L and bigG alike)
FREE_IDS = (49300, 49301, 49302, 49303, 49304, 49305, 49306, 49307, 49308, 49309)  # not in the test prompts


def vectors(count: int, width: int = WIDTH, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed)) * 0.5


def save_pt(path, tensor, step=100):
    """A1111's own training output layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": tensor},
        "name": path.stem,
        "step": step,
        "sd_checkpoint": "4c86efd062",
        "sd_checkpoint_name": "tiny",
    }
    torch.save(data, path)
    return path


@pytest.fixture(scope="module")
def sd1():
    return tiny_models.tiny_loaded_model("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return tiny_models.tiny_loaded_model("sdxl")


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "embeddings"
    save_pt(folder / "shinystyle.pt", vectors(3, seed=1))
    save_safetensors({"emb_params": vectors(10, seed=2)}, folder / "sub" / "longstyle.safetensors")
    save_safetensors({"emb_params": vectors(2, width=16, seed=3)}, folder / "narrowstyle.safetensors")
    xl = {"clip_l": vectors(2, seed=4), "clip_g": vectors(2, seed=5)}
    save_safetensors(xl, folder / "xlstyle.safetensors")
    return EmbeddingLibrary([folder])


def encode_by_hand(model, before: str, embedding: dict[int, torch.Tensor], after: str = ""):
    """The prompt `before <embedding> after` through copies of the encoders whose vocabulary holds the vectors at
    FREE_IDS: [77, C] (SDXL: penultimate layers concatenated) and the pooled bigG projection for SDXL."""
    tokenizer = model.tokenizers[0]
    count = next(iter(embedding.values())).shape[0]
    ids = tokenizer(before, add_special_tokens=False)["input_ids"] + list(FREE_IDS[:count])
    ids += tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    hidden, pooled = [], None
    for index, (encoder, tok) in enumerate(zip(model.text_encoders, model.tokenizers, strict=True)):
        encoder = copy.deepcopy(encoder)
        with torch.no_grad():
            encoder.get_input_embeddings().weight[list(FREE_IDS[:count])] = embedding[index]
        row = [tok.bos_token_id, *ids, tok.eos_token_id] + [tok.pad_token_id] * (CHUNK_LENGTH - len(ids))
        with torch.no_grad():
            out = encoder(input_ids=torch.tensor([row]), output_hidden_states=True)
        hidden.append(out.hidden_states[-2][0] if model.is_sdxl else out.last_hidden_state[0])
        pooled = getattr(out, "text_embeds", None)
    return torch.cat(hidden, dim=-1), None if pooled is None else pooled[0]


# --- the library -------------------------------------------------------------------------------------------


def test_library_lists_sub_folders_and_splits_by_width(library, sd1, sdxl):
    assert sorted(library.all()) == ["longstyle", "narrowstyle", "shinystyle", "xlstyle"]
    split = library.for_model(sd1)
    assert sorted(split.loaded) == ["longstyle", "shinystyle"]
    assert sorted(split.skipped) == ["narrowstyle", "xlstyle"]
    xl = library.for_model(sdxl)
    assert sorted(xl.loaded) == ["xlstyle"] and xl.loaded["xlstyle"].shape == 2 * WIDTH


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    save_code_pickle(tmp_path / "embeddings" / "evil.pt", marker)
    save_pt(tmp_path / "embeddings" / "good.pt", vectors(1))
    library = EmbeddingLibrary([tmp_path / "embeddings"])
    assert list(library.all()) == ["good"]
    assert not marker.exists()
    assert len(library.errors) == 1 and "evil.pt" in library.errors[0]


def test_only_regular_files_inside_the_folder(tmp_path):
    outside = save_pt(tmp_path / "elsewhere" / "outsider.pt", vectors(1))
    folder = tmp_path / "embeddings"
    save_pt(folder / "inside.pt", vectors(1))
    os.symlink(outside, folder / "linked.pt")  # leads out of the folder: not listed
    os.mkfifo(folder / "fifo.pt")  # would block a reader: not listed
    assert list(EmbeddingLibrary([folder]).all()) == ["inside"]


def test_new_and_removed_files_are_seen_and_refresh_rereads_a_rewritten_one(tmp_path):
    folder = tmp_path / "embeddings"
    save_pt(folder / "first.pt", vectors(1))
    library = EmbeddingLibrary([folder])
    assert list(library.all()) == ["first"]
    save_pt(folder / "sub" / "second.pt", vectors(4))  # a new sub-folder's file: its folder changed
    (folder / "first.pt").unlink()
    assert list(library.all()) == ["second"] and library.all()["second"].vectors == 4
    save_pt(folder / "sub" / "second.pt", vectors(6))  # rewritten in place: the folder's mtime may not change
    library.refresh()
    assert library.all()["second"].vectors == 6


# --- conditioning ------------------------------------------------------------------------------------------


def test_name_in_prompt_is_replaced_by_its_vectors(library, sd1):
    encoder = PromptEncoder(sd1, 1, library)
    got = encoder.encode(["a photo of shinystyle on a hill"]).embeds[0]
    expected, _ = encode_by_hand(sd1, "a photo of", {0: vectors(3, seed=1)}, "on a hill")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    plain = PromptEncoder(sd1, 1).encode(["a photo of shinystyle on a hill"]).embeds[0]
    assert not torch.allclose(got, plain, atol=1e-3)  # without the library the name is just text
    assert list(encoder.used) == ["shinystyle"]
    assert not sd1.text_encoders[0].get_input_embeddings()._forward_hooks  # nothing left on the shared model


def test_clip_skip_reads_the_earlier_layer_with_the_vectors_in_place(library, sd1):
    got = PromptEncoder(sd1, 2, library).encode(["shinystyle"]).embeds[0]
    text_encoder = copy.deepcopy(sd1.text_encoders[0])
    with torch.no_grad():
        text_encoder.get_input_embeddings().weight[list(FREE_IDS[:3])] = vectors(3, seed=1)
        tok = sd1.tokenizers[0]
        row = [tok.bos_token_id, *FREE_IDS[:3], tok.eos_token_id] + [tok.pad_token_id] * (CHUNK_LENGTH - 3)
        out = text_encoder(input_ids=torch.tensor([row]), output_hidden_states=True)
        expected = getattr(text_encoder, "text_model", text_encoder).final_layer_norm(out.hidden_states[-2])[
            0
        ]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sdxl_takes_clip_l_and_clip_g_vectors_and_pooled(library, sdxl):
    got = PromptEncoder(sdxl, 1, library).encode(["xlstyle portrait"])
    expected, pooled = encode_by_hand(sdxl, "", {0: vectors(2, seed=4), 1: vectors(2, seed=5)}, "portrait")
    torch.testing.assert_close(got.embeds[0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.pooled[0], pooled, rtol=1e-5, atol=1e-5)


def test_emphasis_applies_to_embedding_vectors(library, sd1):
    tokens = tokenize_prompt(
        "(shinystyle:1.5) cat",
        sd1.tokenizers[0],
        vocabulary=EmbeddingVocabulary(sd1.tokenizers[0], library.all()),
    )
    chunk = tokens.chunks[0]
    assert chunk.multipliers[:3] == (1.5, 1.5, 1.5) and chunk.multipliers[3] == 1.0
    assert chunk.tokens[:3] == (0, 0, 0) and [(f.offset, f.name) for f in chunk.fixes] == [(0, "shinystyle")]
    weighted = PromptEncoder(sd1, 1, library).encode(["(shinystyle:1.5) cat"]).embeds[0]
    assert not torch.allclose(weighted, PromptEncoder(sd1, 1, library).encode(["shinystyle cat"]).embeds[0])


def test_vectors_count_toward_chunks_and_token_counts(library, sd1):
    tokenizer = sd1.tokenizers[0]
    vocabulary = EmbeddingVocabulary(tokenizer, library.for_model(sd1).loaded)
    prompt = "cat " * 70 + "longstyle"  # 70 tokens + 10 vectors: the embedding moves whole to chunk 2
    tokens = tokenize_prompt(prompt, tokenizer, vocabulary=vocabulary)
    assert [len(c.tokens) for c in tokens.chunks] == [70, 10]
    assert [(f.offset, f.name) for f in tokens.chunks[1].fixes] == [(0, "longstyle")]
    assert tokens.token_count == 85
    assert count_tokens(prompt, tokenizer, vocabulary=vocabulary) == (85, 150)
    assert count_tokens("longstyle", tokenizer, vocabulary=vocabulary) == (10, 75)
    assert PromptEncoder(sd1, 1, library).count_tokens("a longstyle") == (11, 75)
    assert embedding_token_counter(tokenizer, library.for_model(sd1).loaded)("longstyle, cat", 20, True) == 12
    encoded = PromptEncoder(sd1, 1, library).encode([prompt]).embeds
    assert encoded.shape[1] == 2 * 77


def test_wrong_width_embedding_is_skipped_and_not_used(library, sd1):
    encoder = PromptEncoder(sd1, 1, library)
    assert "narrowstyle" in encoder.embeddings.skipped
    got = encoder.encode(["narrowstyle cat"]).embeds
    torch.testing.assert_close(got, PromptEncoder(sd1, 1).encode(["narrowstyle cat"]).embeds)
    assert encoder.used == {} and encoder.ti_hashes() is None
    assert encoder.count_tokens("narrowstyle") == count_tokens("narrowstyle", sd1.tokenizers[0])


# --- through the engine ------------------------------------------------------------------------------------


def run_job(model, library, prompt, negative=""):
    request = Txt2ImgRequest(prompt=prompt, negative_prompt=negative, seed=7, steps=2, width=64, height=64)
    settings = EngineSettings(save_images=False, embeddings=library)
    return generate(model, request, JobContext(), settings).images[0]


def test_ti_hashes_in_infotext_and_negative_prompt_works(library, sd1):
    digest = hashlib.sha256(library.all()["shinystyle"].path.read_bytes()).hexdigest()[:12]
    with_embedding = run_job(sd1, library, "cat", negative="shinystyle")
    assert f'TI hashes: "shinystyle: {digest}"' in with_embedding.infotext
    without = run_job(sd1, None, "cat", negative="shinystyle")
    assert "TI hashes" not in without.infotext
    assert not np.array_equal(np.asarray(with_embedding.image), np.asarray(without.image))
    both = run_job(sd1, library, "longstyle cat", negative="shinystyle")
    long_digest = library.all()["longstyle"].shorthash
    assert f'TI hashes: "longstyle: {long_digest}, shinystyle: {digest}"' in both.infotext


def test_plain_prompt_image_unchanged_by_the_library(library, sd1):
    a = run_job(sd1, library, "a cat, narrowstyle")
    b = run_job(sd1, None, "a cat, narrowstyle")
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and "TI hashes" not in a.infotext


# --- the API over real HTTP --------------------------------------------------------------------------------


def test_embeddings_api_lists_loaded_and_skipped_and_refreshes(tmp_path):
    write_tiny_checkpoints(tmp_path)
    folder = tmp_path / "my-embeddings"  # --embeddings-dir
    save_pt(folder / "shinystyle.pt", vectors(3, seed=1), step=1500)
    save_safetensors({"emb_params": vectors(2, width=16)}, folder / "deep" / "narrowstyle.safetensors")
    marker = tmp_path / "ran"
    save_code_pickle(folder / "evil.pt", marker)
    checkpoint = tmp_path / "models" / "Stable-diffusion" / "alpha.safetensors"
    with start_server(tmp_path, ["--embeddings-dir", str(folder), "--ckpt", str(checkpoint)]) as server:
        job = {"prompt": "shinystyle cat", "steps": 1, "width": 64, "height": 64, "seed": 1}
        response = requests.post(server.api + "/txt2img", json=job, timeout=300)
        assert response.status_code == 200, response.text
        digest = hashlib.sha256((folder / "shinystyle.pt").read_bytes()).hexdigest()[:12]
        assert f'TI hashes: "shinystyle: {digest}"' in json.loads(response.json()["info"])["infotexts"][0]
        listing = requests.get(server.api + "/embeddings", timeout=60)
        assert listing.status_code == 200
        body = listing.json()
        assert body["loaded"] == {
            "shinystyle": {
                "step": 1500,
                "sd_checkpoint": "4c86efd062",
                "sd_checkpoint_name": "tiny",
                "shape": WIDTH,
                "vectors": 3,
            }
        }
        assert body["skipped"] == {
            "narrowstyle": {
                "step": None,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "shape": 16,
                "vectors": 2,
            }
        }
        assert not marker.exists()

        save_safetensors({"emb_params": vectors(5)}, folder / "newstyle.safetensors")
        assert requests.post(server.api + "/refresh-embeddings", timeout=60).status_code == 200
        loaded = requests.get(server.api + "/embeddings", timeout=60).json()["loaded"]
        assert sorted(loaded) == ["newstyle", "shinystyle"] and loaded["newstyle"]["vectors"] == 5


def test_comma_backtrack_moves_an_embedding_with_the_words_after_the_comma(library, sd1):
    tokenizer = sd1.tokenizers[0]
    vocabulary = EmbeddingVocabulary(tokenizer, library.for_model(sd1).loaded)
    prompt = (
        "cat " * 70 + ", shinystyle dog dog dog"
    )  # the chunk fills at the 3rd dog; ", shinystyle dog.." moves
    chunks = tokenize_prompt(prompt, tokenizer, vocabulary=vocabulary).chunks
    assert [len(c.tokens) for c in chunks] == [71, 6]
    assert chunks[0].fixes == () and [(f.offset, f.name) for f in chunks[1].fixes] == [(0, "shinystyle")]
    assert chunks[1].tokens[:3] == (0, 0, 0)


# --- the app's services: default folder, the limits' and the UI's token counters ---------------------------


def test_services_read_embeddings_dir_and_count_vectors_for_limits_and_ui(tmp_path):
    from sdwebui.config.flags import parse_args
    from sdwebui.engine.requests import RequestError
    from sdwebui.services import build_services
    from webui.backend import UiBackend

    save_safetensors({"emb_params": vectors(10)}, tmp_path / "embeddings" / "longstyle.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"limit_prompt_tokens": 15}))
    services = build_services(parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"]))
    try:
        assert services.embeddings.dirs == [tmp_path.resolve() / "embeddings"]
        assert services.token_counter()("longstyle, cat", 20, True) == 12
        assert UiBackend(services).count_tokens("a longstyle") == (11, 75)
        with pytest.raises(RequestError) as refused:  # 2 x 10 vectors: over the limit of 15 tokens
            services.submit_generation(Txt2ImgRequest(prompt="longstyle longstyle", steps=1))
        assert refused.value.field == "prompt" and "20 tokens" in refused.value.reason
    finally:
        services.shutdown()
