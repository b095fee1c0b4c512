"""A tiny local model for CPU runs: character tokenizer + a small random-init Llama.

Nothing here touches the network. ``build_tiny_model`` writes a regular Hugging Face folder,
so everything downstream (``AutoModelForCausalLM.from_pretrained``, TRL, our trainer) treats
it like any other model. Sizes follow ``../shared/notes/tiny-learning.md``: 2 layers, hidden
128 (~0.55M parameters) learns 2-3 operand +/- arithmetic in minutes on 2 CPU cores.

Example:
    >>> tok = build_char_tokenizer()
    >>> ids = tok("4-34+82=")["input_ids"]
    >>> ids[0] == tok.bos_token_id and len(ids) == 1 + len("4-34+82=")
    True
    >>> tok.decode(ids, skip_special_tokens=True)
    '4-34+82='
"""
from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

# The names ``tiny://NAME`` accepts, with what each is for. They share one architecture (options
# go in the query string); the name keeps each task's cache folder and warm start apart.
TINY_MODELS = {
    "arithmetic": "procedural arithmetic (recipes/tiny/math_grpo.yaml, llmrl demo)",
    "code": "small code tasks (recipes/tiny/code_grpo.yaml)",
    "research": "procedural fact lookup with search tools (recipes/tiny/research_grpo.yaml)",
    "translation": "numbers in English words to French words (recipes/tiny/translation_grpo.yaml)",
    "notes": "synthetic clinical notes (recipes/tiny/private_sft.yaml, bench/dp_utility.py)",
}

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, USER, ASSISTANT, END]

# Printable ASCII without vertical tab / form feed: digits, letters, punctuation, space, \t \n \r.
# Enough for arithmetic and for small code tasks; anything else maps to <unk>.
CHARACTERS = [c for c in string.printable if c not in "\x0b\x0c"]

# Each message is <|role|>content<|end|>; generation starts after <|assistant|>. The template
# writes <bos> itself because apply_chat_template tokenizes with add_special_tokens=False
# (the same convention as Llama 3 templates).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_char_tokenizer():
    """Character-level tokenizer over printable ASCII, with <bos> prepended on encode.

    Returns a ``transformers.PreTrainedTokenizerFast`` with pad/bos/eos set, left padding
    (for batched generation) and a small chat template (roles ``system``/``user``/``assistant``
    render as ``<|role|>...<|end|>``; only ``user`` and ``assistant`` have their own tokens,
    other roles are spelled out in characters). Decoding concatenates characters, so
    ``decode(encode(text), skip_special_tokens=True) == text`` for any printable-ASCII text.

    Example:
        >>> tok = build_char_tokenizer()
        >>> tok.apply_chat_template([{"role": "user", "content": "1+1="}],
        ...                         tokenize=False, add_generation_prompt=True)
        '<bos><|user|>1+1=<|end|><|assistant|>'
    """
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One token per character, whitespace included ([\s\S] also matches newlines).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()  # join tokens with no separator (WordLevel would add spaces)
    bos_id = vocab[BOS]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    tok.add_special_tokens(SPECIAL_TOKENS)

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT, END],
        padding_side="left",
        clean_up_tokenization_spaces=False,  # would turn "a ." into "a." and break round-trips
        model_max_length=10**6,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 256,
    tie_word_embeddings: bool = False,
    seed: int = 0,
) -> Path:
    """Build a random-init Llama-style causal LM with the character tokenizer; save it to ``out_dir``.

    Args:
        out_dir: folder to write (created if missing); afterwards
            ``AutoModelForCausalLM.from_pretrained(out_dir)`` and
            ``AutoTokenizer.from_pretrained(out_dir)`` work offline.
        hidden_size, num_layers, num_heads: model width, depth and attention heads.
        intermediate_size: MLP width; default ``4 * hidden_size``.
        max_position_embeddings: longest sequence (prompt + completion) the model supports.
        tie_word_embeddings: share input embedding and lm_head weights.
        seed: initialisation seed; the same arguments give bit-identical weights.

    Returns:
        ``Path(out_dir)``.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tok = build_char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        dtype="float32",
    )
    # Seed a private generator state so building a model doesn't disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        # <eos> ends plain completions, <|end|> ends a chat turn.
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids(END)],
        pad_token_id=tok.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
