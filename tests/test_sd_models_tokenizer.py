from sdwebui.models.tokenizer import (
    VOCAB_SIZE,
    build_clip_tokenizer,
    build_openclip_tokenizer,
    clip_vocab_and_merges,
)


def test_known_ids_for_a_sentence():
    tok = build_clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_vocab_layout_matches_openai_clip():
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == VOCAB_SIZE
    assert len(merges) == 49152 - 256 - 2
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_pad_tokens_per_family():
    clip_l = build_clip_tokenizer()
    open_clip = build_openclip_tokenizer()
    assert clip_l.pad_token_id == 49407
    assert open_clip.pad_token_id == 0
    assert clip_l.model_max_length == 77
    padded = open_clip("a cat", padding="max_length", max_length=8).input_ids
    assert padded == [49406, 320, 2368, 49407, 0, 0, 0, 0]
    padded = clip_l("a cat", padding="max_length", max_length=6).input_ids
    assert padded == [49406, 320, 2368, 49407, 49407, 49407]


def test_unicode_and_punctuation_match_reference_ids():
    # Reference ids from open_clip.tokenizer.SimpleTokenizer for the same text.
    tok = build_clip_tokenizer()
    ids = tok("Hello, World!!  naïve emoji 🎉 running").input_ids
    assert ids == [49406, 3306, 267, 1002, 748, 1097, 35689, 563, 16327, 3986, 2761, 49407]
    assert tok.decode(ids, skip_special_tokens=True) == "hello , world !! naïve emoji 🎉 running"


def test_shared_tokenizers_are_built_once_per_pad_token():
    from sdwebui.models.loader import tokenizers_for_family
    from sdwebui.models.model import ModelFamily
    from sdwebui.models.tokenizer import shared_clip_tokenizer

    sdxl = tokenizers_for_family(ModelFamily.SDXL)
    assert sdxl[0] is shared_clip_tokenizer() and sdxl[1] is tokenizers_for_family(ModelFamily.SD2)[0]
    assert [t.pad_token_id for t in sdxl] == [49407, 0]
    assert sdxl[0]("a cat").input_ids == build_clip_tokenizer()("a cat").input_ids
