"""Character tokenizer and tiny Llama: round-trips, <bos>, chat template, offline save/load."""
from __future__ import annotations

import string

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmrl.models.tiny import build_char_tokenizer, build_tiny_model


def test_round_trip_is_exact_and_one_token_per_char():
    tok = build_char_tokenizer()
    text = "def f(x):\n\treturn x  + 1  # a , b . c\r\n" + string.ascii_letters + string.digits
    ids = tok(text)["input_ids"]
    # <bos> + one id per character, so 1 + len(text) ids.
    assert len(ids) == 1 + len(text)
    assert ids[0] == tok.bos_token_id
    # No spaces inserted between characters, none dropped ("  " and " ." survive).
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids) == "<bos>" + text
    assert tok("4-34+82=", add_special_tokens=False)["input_ids"] == tok.convert_tokens_to_ids(list("4-34+82="))


def test_special_tokens_padding_and_unknown():
    tok = build_char_tokenizer()
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<bos>", "<eos>")
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    assert tok.padding_side == "left"
    batch = tok(["1+1=", "12+34="], padding=True)
    # "1+1=" is 5 ids with <bos>, "12+34=" is 7: the short one gets 2 pads on the LEFT.
    assert batch["input_ids"][0][:3] == [tok.pad_token_id, tok.pad_token_id, tok.bos_token_id]
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1, 1, 1]
    # Characters outside printable ASCII map to <unk> rather than failing.
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_chat_template():
    tok = build_char_tokenizer()
    messages = [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<bos><|user|>1+1=<|end|><|assistant|>2<|end|>"
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<bos><|user|>1+1=<|end|><|assistant|>"
    # Rendered with <bos> once: tokenizing the text without special tokens gives 1 + 4 + 1 + 4 + 1 +
    # 1 ids (<bos>, <|user|>, "1+1=", <|end|>, <|assistant|>) = 8 ids... counted: 1+1+4+1+1 = 8.
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert len(ids) == 8 and ids.count(tok.bos_token_id) == 1


def test_build_save_load_offline_and_generate(tmp_path):
    out = build_tiny_model(tmp_path / "m", seed=3)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tok)
    assert tok.padding_side == "left" and tok.chat_template
    assert tok.decode(tok("a b  c")["input_ids"], skip_special_tokens=True) == "a b  c"
    # hidden 128, 2 layers, MLP 512, untied: per layer 4*128^2 (attn) + 3*128*512 (mlp) + 2*128
    # (norms) = 262,400; two layers 524,800; + 2 * V * 128 embeddings/head + 128 final norm.
    V = len(tok)
    assert sum(p.numel() for p in model.parameters()) == 2 * 262_400 + 2 * V * 128 + 128
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert tok.eos_token_id in model.generation_config.eos_token_id

    batch = tok(["1+2=", "33-4="], return_tensors="pt", padding=True)
    ids = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert ids.shape[0] == 2 and ids.shape[1] <= batch["input_ids"].shape[1] + 4

    # Same seed -> identical weights; another seed -> different ones.
    same = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "m2", seed=3))
    other = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "m3", seed=4))
    w = model.model.embed_tokens.weight
    assert torch.equal(w, same.model.embed_tokens.weight)
    assert not torch.equal(w, other.model.embed_tokens.weight)
