"""Text conditioning on tiny random CLIP encoders: chunking, emphasis, CLIP skip, SDXL, parity with diffusers."""

import diffusers
import pytest
import torch

from sdwebui.engine.conditioning import (
    CHUNK_LENGTH,
    Conditioning,
    PromptEncoder,
    count_tokens,
    tokenize_prompt,
)
from sdwebui.models.tokenizer import build_clip_tokenizer, build_openclip_tokenizer

LONG_PROMPT = " ".join(["cat"] * 80)  # 80 tokens: two chunks


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


def diffusers_sd_pipeline(model):
    return diffusers.StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoders[0],
        tokenizer=model.tokenizers[0],
        unet=model.unet,
        scheduler=diffusers.DDIMScheduler.from_config(model.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def assert_same(a, b):
    # batches of different sizes may take different CPU kernels: equal up to float rounding
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def count_encoder_calls(model) -> list[int]:
    calls = []
    for encoder in model.text_encoders:
        encoder.register_forward_hook(lambda module, args, kwargs, out: calls.append(1), with_kwargs=True)
    return calls


# --- tokenization and the token counter ---------------------------------------------------------------


def test_short_prompt_is_one_chunk(tokenizer):
    prompt = tokenize_prompt("a photo of a cat", tokenizer)
    assert len(prompt.chunks) == 1
    assert prompt.chunks[0].tokens == (320, 1125, 539, 320, 2368)
    assert prompt.token_count == 5
    ids = prompt.chunks[0].input_ids(49406, 49407, 0)
    assert len(ids) == 77 and ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and set(ids[7:]) == {0}


def test_long_prompt_and_break_chunks(tokenizer):
    long = tokenize_prompt(LONG_PROMPT, tokenizer)
    assert [len(c.tokens) for c in long.chunks] == [75, 5] and long.token_count == 80
    broken = tokenize_prompt("a cat BREAK a dog", tokenizer)
    assert [c.tokens for c in broken.chunks] == [(320, 2368), (320, 1929)]
    assert broken.token_count == 77
    assert len(tokenize_prompt("", tokenizer).chunks) == 1


def test_weights_follow_tokens(tokenizer):
    chunk = tokenize_prompt("a (cat:1.5) [photo]", tokenizer).chunks[0]
    assert chunk.tokens == (320, 2368, 1125)
    assert chunk.multipliers == pytest.approx((1.0, 1.5, 1 / 1.1))
    assert chunk.weights()[:5] == pytest.approx([1.0, 1.0, 1.5, 1 / 1.1, 1.0]) and len(chunk.weights()) == 77


def test_comma_backtrack_moves_words_after_last_comma(tokenizer):
    # 70 words, a comma, then 10 words: the chunk would fill at 75 with the comma 4 tokens back
    prompt = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks = tokenize_prompt(prompt, tokenizer).chunks
    assert len(chunks[0].tokens) == 71 and chunks[0].tokens[-1] == 267
    assert chunks[1].tokens == (1929,) * 10
    no_backtrack = tokenize_prompt(prompt, tokenizer, comma_backtrack=0).chunks
    assert len(no_backtrack[0].tokens) == 75


def test_count_tokens(tokenizer):
    assert count_tokens("a photo of a cat", tokenizer) == (5, 75)
    assert count_tokens("", tokenizer) == (0, 75)
    assert count_tokens(LONG_PROMPT, tokenizer) == (80, 150)
    assert count_tokens("a BREAK b", tokenizer) == (76, 150)
    assert count_tokens("(a cat:1.3)", tokenizer) == (2, 75)
    # prompt editing: the longest variant counts
    assert count_tokens("[cat:a big fluffy cat:5] photo", tokenizer, steps=20) == (5, 75)
    assert count_tokens("[dog|a big cat] photo", tokenizer, steps=20) == (4, 75)
    # AND parts count separately (positive prompt only); extra-network tags are not tokens
    assert count_tokens("a cat AND a big dog", tokenizer) == (3, 75)
    assert count_tokens("a cat AND a big dog", tokenizer, is_positive=False) == (6, 75)
    assert count_tokens("a cat <lora:some_lora:0.8>", tokenizer) == (2, 75)


# --- encoding ------------------------------------------------------------------------------------------


def test_sd1_matches_diffusers_encode_prompt(tiny_sd1_model):
    pipe = diffusers_sd_pipeline(tiny_sd1_model)
    prompts = ["a photo of a cat", ""]
    expected, _ = pipe.encode_prompt(prompts, torch.device("cpu"), 1, False)
    got = PromptEncoder(tiny_sd1_model).encode(prompts)
    assert got.pooled is None
    assert got.embeds.shape == (2, 77, 32)
    assert torch.equal(got.embeds, expected)


def test_clip_skip_2_is_penultimate_layer_with_final_norm(tiny_sd1_model):
    # what diffusers' encode_prompt(clip_skip=1) computes (it cannot run itself on transformers 5's CLIPTextModel)
    encoder, tok = tiny_sd1_model.text_encoders[0], tiny_sd1_model.tokenizers[0]
    ids = tok(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = encoder.final_layer_norm(encoder(ids, output_hidden_states=True).hidden_states[-2])
    skip1 = PromptEncoder(tiny_sd1_model, clip_skip=1).encode(["a cat"]).embeds
    skip2 = PromptEncoder(tiny_sd1_model, clip_skip=2).encode(["a cat"]).embeds
    assert not torch.allclose(skip1, skip2)
    torch.testing.assert_close(skip2, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("clip_skip", [0, 3, 1.5, True, "2"])
def test_bad_clip_skip_is_a_clear_error(tiny_sd1_model, clip_skip):
    with pytest.raises(ValueError, match="clip_skip"):
        PromptEncoder(tiny_sd1_model, clip_skip=clip_skip)


def test_bad_prompts_are_a_clear_error(tiny_sd1_model):
    encoder = PromptEncoder(tiny_sd1_model)
    with pytest.raises(ValueError, match="list"):
        encoder.encode([])
    with pytest.raises(ValueError, match="list"):
        encoder.encode("a cat")
    with pytest.raises(TypeError, match="strings"):
        encoder.encode(["a", None])


def test_long_prompts_concatenate_chunks_and_batch_is_padded(tiny_sd1_model):
    encoder = PromptEncoder(tiny_sd1_model)
    out = encoder.encode([LONG_PROMPT, "a cat"])
    assert out.embeds.shape == (2, 154, 32)
    long_alone = encoder.encode([LONG_PROMPT]).embeds[0]
    short_alone = encoder.encode(["a cat"]).embeds[0]
    empty = encoder.encode([""]).embeds[0]
    assert_same(out.embeds[0], long_alone)
    assert_same(out.embeds[1, :77], short_alone)
    assert_same(out.embeds[1, 77:], empty)  # padded with the empty chunk, as A1111
    # the second chunk of the long prompt is encoded on its own: BOS + 5 tokens + EOS
    five = encoder.encode([" ".join(["cat"] * 5)]).embeds[0]
    assert_same(long_alone[77:], five)


def test_break_starts_a_new_chunk(tiny_sd1_model):
    encoder = PromptEncoder(tiny_sd1_model)
    out = encoder.encode(["a cat BREAK a dog"]).embeds[0]
    assert out.shape == (154, 32)
    assert_same(out[:77], encoder.encode(["a cat"]).embeds[0])
    assert_same(out[77:], encoder.encode(["a dog"]).embeds[0])


def test_emphasis_scales_weighted_tokens_and_restores_mean(tiny_sd1_model):
    # a real CLIP's final norm has a learned bias, so its output mean is far from 0: give the tiny one a bias
    with torch.no_grad():
        tiny_sd1_model.text_encoders[0].final_layer_norm.bias.fill_(0.3)
    encoder = PromptEncoder(tiny_sd1_model)
    plain = encoder.encode(["a cat photo"]).embeds[0].double()
    weighted = encoder.encode(["a (cat:1.5) photo"]).embeds[0].double()
    torch.testing.assert_close(weighted.mean(), plain.mean(), rtol=1e-5, atol=1e-7)
    ratio = weighted / plain  # one global rescale factor k; the weighted token (position 2) gets 1.5 k
    k = ratio[0, 0].item()
    others = torch.cat([ratio[:2], ratio[3:]])
    torch.testing.assert_close(others, torch.full_like(others, k), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ratio[2], torch.full_like(ratio[2], 1.5 * k), rtol=1e-4, atol=1e-4)
    assert 0.8 < k < 1.0  # one token of 77 weighted up: everything else scales down a little


def test_emphasis_on_a_zero_mean_encoder_only_scales_tokens(tiny_sd1_model):
    # freshly initialised final norm (weight 1, bias 0): the mean is ~1e-8 and restoring it would be noise
    encoder = PromptEncoder(tiny_sd1_model)
    plain = encoder.encode(["a cat [dog"]).embeds[0]
    weighted = encoder.encode(["a (cat [dog"]).embeds[0]
    # "cat" goes 1 -> 1.1 and "dog" 1/1.1 -> 1.1/1.1; BOS, EOS and padding keep weight 1
    torch.testing.assert_close(weighted[2:4], plain[2:4] * 1.1)
    torch.testing.assert_close(weighted[:2], plain[:2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weighted[4:], plain[4:], rtol=1e-5, atol=1e-5)


def test_empty_prompt_is_the_empty_string_encoding(tiny_sd1_model):
    encoder = PromptEncoder(tiny_sd1_model)
    empty = encoder.encode([""]).embeds
    pipe = diffusers_sd_pipeline(tiny_sd1_model)
    expected, _ = pipe.encode_prompt([""], torch.device("cpu"), 1, False)
    assert torch.equal(empty, expected)
    assert_same(encoder.encode(["()"]).embeds, empty)


def test_cache_is_per_instance(tiny_sd1_model):
    calls = count_encoder_calls(tiny_sd1_model)
    encoder = PromptEncoder(tiny_sd1_model)
    first = encoder.encode(["a cat", "a dog"])
    assert len(calls) == 1  # one batched call for "a cat" and "a dog"
    again = encoder.encode(["a dog", "a cat", "a cat"])
    assert len(calls) == 1
    assert torch.equal(again.embeds[0], first.embeds[1]) and torch.equal(again.embeds[2], first.embeds[0])
    PromptEncoder(tiny_sd1_model).encode(["a cat"])
    assert len(calls) == 2


def test_sd2_pads_with_exclamation_and_matches_diffusers(tiny_sd2_model):
    assert tiny_sd2_model.tokenizers[0].pad_token_id == 0
    pipe = diffusers_sd_pipeline(tiny_sd2_model)
    expected, _ = pipe.encode_prompt(["a photo of a cat"], torch.device("cpu"), 1, False)
    got = PromptEncoder(tiny_sd2_model).encode(["a photo of a cat"])
    assert torch.equal(got.embeds, expected)


def test_sdxl_dual_encoders_and_pooled_match_diffusers(tiny_sdxl_model):
    model = tiny_sdxl_model
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=model.vae,
        text_encoder=model.text_encoders[0],
        text_encoder_2=model.text_encoders[1],
        tokenizer=model.tokenizers[0],
        tokenizer_2=model.tokenizers[1],
        unet=model.unet,
        scheduler=diffusers.EulerDiscreteScheduler.from_config(model.scheduler_config),
    )
    prompts = ["a photo of a cat", "a dog"]
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompts, device=torch.device("cpu"), do_classifier_free_guidance=False
    )
    got = PromptEncoder(model).encode(prompts)
    assert got.embeds.shape == (2, 77, 64) and got.pooled.shape == (2, 32)
    assert torch.equal(got.embeds, embeds)
    assert torch.equal(got.pooled, pooled)


def test_sdxl_long_prompt_pools_first_chunk(tiny_sdxl_model):
    encoder = PromptEncoder(tiny_sdxl_model)
    long = encoder.encode([LONG_PROMPT])
    first_chunk = encoder.encode([" ".join(["cat"] * 75)])
    assert long.embeds.shape == (1, 154, 64)
    assert_same(long.pooled, first_chunk.pooled)
    assert not torch.equal(
        PromptEncoder(tiny_sdxl_model, clip_skip=2).encode(["a cat"]).embeds[:, :, :32],
        encoder.encode(["a cat"]).embeds[:, :, :32],
    )


def test_sdxl_refiner_uses_bigg_only(tiny_sdxl_refiner_model):
    got = PromptEncoder(tiny_sdxl_refiner_model).encode(["a cat"])
    assert got.embeds.shape == (1, 77, 32) and got.pooled.shape == (1, 32)


def test_conditioning_validates_shapes():
    with pytest.raises(ValueError, match="embeds"):
        Conditioning(torch.zeros(77, 32))
    with pytest.raises(ValueError, match="pooled"):
        Conditioning(torch.zeros(2, 77, 32), torch.zeros(1, 32))
    assert CHUNK_LENGTH == 75


def test_openclip_tokenizer_chunks_like_clip(tokenizer):
    assert tokenize_prompt("a cat, a dog", build_openclip_tokenizer()) == tokenize_prompt(
        "a cat, a dog", tokenizer
    )


def test_leading_break_gives_an_empty_first_chunk(tiny_sd1_model, tokenizer):
    assert [c.tokens for c in tokenize_prompt("BREAK a cat", tokenizer).chunks] == [(), (320, 2368)]
    encoder = PromptEncoder(tiny_sd1_model)
    out = encoder.encode(["BREAK a cat"]).embeds[0]
    assert_same(out[:77], encoder.encode([""]).embeds[0])


def test_half_precision_encoder_keeps_its_dtype(tiny_sd1_model):
    tiny_sd1_model.text_encoders[0].to(torch.bfloat16)
    out = PromptEncoder(tiny_sd1_model).encode(["a (cat:1.3) [photo]"]).embeds
    assert out.dtype == torch.bfloat16 and out.shape == (1, 77, 32) and torch.isfinite(out).all()


# --- A1111's get_learned_conditioning / get_multicond_learned_conditioning over the engine's encoder -----------


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_learned_conditioning_records_give_the_engines_conditioning(tiny_model_factory, family):
    from modules import prompt_parser
    from sdwebui.engine.cond_schedule import BatchConditioning, empty_encoding
    from sdwebui.facade.learned_conditioning import ConditioningModel

    encoder = PromptEncoder(tiny_model_factory(family))
    model = ConditioningModel(encoder)
    prompts = ["a [cat:dog:2] AND a hat :0.5", "a [cat:dog:2] AND a hat :0.5", "(red:1.3) BREAK sky"]
    negatives = prompt_parser.SdConditioning(["ugly", "", ""], is_negative_prompt=True, width=64, height=64)
    uncond = prompt_parser.get_learned_conditioning(model, negatives, 4)
    multicond = prompt_parser.get_multicond_learned_conditioning(model, prompts, 4)
    assert multicond.shape == (3,) and [[p.weight for p in parts] for parts in multicond.batch] == [
        [1.0, 0.5], [1.0, 0.5], [1.0]
    ]  # fmt: skip
    first = multicond.batch[0][0].schedules
    assert [s.end_at_step for s in first] == [2, 4] and multicond.batch[1][0].schedules is first  # once each
    cond = first[0].cond
    if family == "sdxl":  # A1111's dict for a model with a pooled embedding
        assert cond["crossattn"].shape == (77, 64) and cond["vector"].shape == (32,)
    else:
        assert cond.shape == (77, 32)
    learned = BatchConditioning.from_learned(multicond, uncond, empty_encoding(encoder))
    own = BatchConditioning.from_prompts(encoder, prompts, list(negatives), 4)
    for step in range(1, 5):
        a, b = learned.at_step(step), own.at_step(step)
        assert_same(a.cond, b.cond)
        assert_same(a.uncond, b.uncond)
        assert a.cond_owner == b.cond_owner == [0, 0, 1, 1, 2] and a.cond_weight == b.cond_weight
        if family == "sdxl":
            assert_same(a.cond_pooled, b.cond_pooled)
    # SdConditioning keeps its flags through a copy, as A1111's
    copied = prompt_parser.SdConditioning(["x"], copy_from=negatives)
    assert copied.is_negative_prompt and (copied.width, copied.height) == (64, 64)


def test_learned_conditioning_that_does_not_fit_the_model_is_a_clear_error(tiny_sd1_model):
    from modules import prompt_parser
    from sdwebui.engine.cond_schedule import BatchConditioning, empty_encoding

    encoder = PromptEncoder(tiny_sd1_model)
    empty = empty_encoding(encoder)
    entry = prompt_parser.ScheduledPromptConditioning(3, torch.zeros(77, 16))  # dim 16, the model has 32
    multicond = prompt_parser.MulticondLearnedConditioning(
        (1,), [[prompt_parser.ComposableScheduledPromptConditioning([entry])]]
    )
    with pytest.raises(ValueError, match=r"tensor \[tokens, 32\].*\(77, 16\)"):
        BatchConditioning.from_learned(multicond, [[entry]], empty)
    fitting = prompt_parser.ScheduledPromptConditioning(3, torch.zeros(77, 32))
    multicond.batch[0][0].schedules = [fitting]
    with pytest.raises(ValueError, match="one uncond schedule per image"):
        BatchConditioning.from_learned(multicond, [], empty)
    with pytest.raises(ValueError, match="end_at_step must be an integer"):
        BatchConditioning.from_learned(
            multicond, [[prompt_parser.ScheduledPromptConditioning(2.5, fitting.cond)]], empty
        )
