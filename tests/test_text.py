"""Hashed-word tokenizer and the instruction encoder (null embedding, dropout, no NaNs on empty rows)."""

from __future__ import annotations

import pytest
import torch

from gr2_sim.errors import UserError
from gr2_sim.text import PAD_ID, TextEncoder, tokenize, word_id, words


def test_tokenize_is_deterministic_and_case_insensitive():
    a = tokenize(["Pick up the RED cube!", "push the block left"], max_len=8)
    b = tokenize(["pick up the red cube", "Push the block, left."], max_len=8)
    assert a.dtype == torch.long and a.shape == (2, 8)
    assert torch.equal(a, b)
    # a known value pins the hash across machines and Python processes (no PYTHONHASHSEED dependence)
    assert word_id("red") == a[0, 3].item() == 1957 and word_id("cube") == 595


def test_padding_truncation_and_range():
    ids = tokenize(["one two three four five", "one"], max_len=3, vocab_size=50)
    assert ids.shape == (2, 3)
    assert (ids[0] != PAD_ID).all() and ids[1, 0] != PAD_ID and (ids[1, 1:] == PAD_ID).all()
    assert int(ids.min()) >= 0 and int(ids.max()) < 50
    assert words("Don't stop-now") == ["don", "t", "stop", "now"]


def test_empty_instruction_is_all_padding():
    ids = tokenize(["", "   ", "!?"], max_len=4)
    assert (ids == PAD_ID).all()


def test_tokenize_rejects_a_bare_string():
    with pytest.raises(UserError, match="list of instructions"):
        tokenize("pick up the cube", max_len=4)


def test_encoder_uses_null_for_empty_and_dropped_instructions():
    torch.manual_seed(0)
    enc = TextEncoder(vocab_size=64, lang_dim=16, max_len=6, n_layers=1)
    torch.nn.init.normal_(enc.null)
    tokens = enc.tokenize(["stack the cubes", ""])
    out = enc(tokens)
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    assert torch.equal(out[1], enc.null) and not torch.equal(out[0], enc.null)
    assert torch.equal(enc(tokens, drop_prob=1.0), enc.null.expand(2, 16))
    # the empty row must not poison gradients (its attention has every key padded)
    enc(tokens).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_bag_of_words_encoder_and_order_sensitivity():
    enc0 = TextEncoder(vocab_size=2048, lang_dim=8, max_len=6, n_layers=0)
    a, b = enc0(enc0.tokenize(["red on blue", "blue on red"]))
    assert torch.allclose(a, b, atol=1e-6)  # a bag of words cannot tell them apart ...
    enc1 = TextEncoder(vocab_size=2048, lang_dim=8, max_len=6, n_layers=1)
    torch.nn.init.normal_(enc1.pos)
    tokens = enc1.tokenize(["red on blue", "blue on red"])
    assert not torch.equal(tokens[0], tokens[1])  # "red" and "blue" do not collide in 2047 buckets
    a, b = enc1(tokens)
    assert not torch.allclose(a, b, atol=1e-4)  # ... positions + attention can


def test_encoder_rejects_ids_outside_its_vocabulary():
    enc = TextEncoder(vocab_size=16, lang_dim=8, max_len=4)
    with pytest.raises(UserError, match="vocab_size=16"):
        enc(tokenize(["pick up the cube"], max_len=4, vocab_size=2048))


def test_bigrams_bind_each_color_to_its_noun():
    from gr2_sim.text import bigram_ids

    a, b = "put the red cube in the blue bowl", "put the blue cube in the red bowl"
    tokens = tokenize([a, b], max_len=12)
    ids = bigram_ids(tokens, 2048)
    assert ((ids == 0) == ((tokens == PAD_ID) | (torch.roll(tokens, -1, 1) == PAD_ID))).all()  # 0 only at the ends
    assert int(ids.min()) >= 0 and int(ids.max()) < 2048
    torch.manual_seed(0)
    for bigrams, differ in ((False, False), (True, True)):
        enc = TextEncoder(vocab_size=2048, lang_dim=16, max_len=12, n_layers=0, bigrams=bigrams)
        with torch.no_grad():
            enc.pos.zero_()  # a pure bag: the same words in another order pool to the same vector
            enc.embed.weight.normal_()
            if bigrams:
                enc.bigram_embed.weight.normal_()
        ea, eb = enc(tokens)
        assert (not torch.allclose(ea, eb, atol=1e-4)) == differ


def test_configs_saved_before_bigrams_load_without_them():
    from gr2_sim.config import ModelConfig, make_config

    old = make_config("tiny").to_dict()
    del old["text_bigrams"]
    assert ModelConfig.from_dict(old).text_bigrams is False
    assert make_config("tiny").text_bigrams is True
    with pytest.raises(Exception, match="text_bigrams='yes' must be true or false"):
        make_config("tiny", text_bigrams="yes")
