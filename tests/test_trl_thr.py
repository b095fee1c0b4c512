"""THR inside TRL's GRPOTrainer (llmrl.integrations.trl_thr): one real CPU step with a tiny model."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from llmrl.integrations.trl_thr import ThrGRPOTrainer, ThrOptions  # noqa: E402

CHARS = "0123456789+-=ab"


def _tokenizer() -> PreTrainedTokenizerFast:
    """Character tokenizer that prepends <bos> (TRL's GRPO needs a bos-prefixed prompt)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<pad>", "<bos>", "<eos>"]
    vocab = {t: i for i, t in enumerate(specials + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   padding_side="left")


def _trainer(tmp_path, thr: ThrOptions, *, temperature: float = 1.0) -> ThrGRPOTrainer:
    tok = _tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False))

    def alternating(completions, **kwargs):
        # 1, 0, 1, 0 within every group of 4: each group has 2 correct responses, so THR is active.
        return [float(i % 2 == 0) for i in range(len(completions))]

    args = GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=5, max_steps=1, learning_rate=1e-3, beta=0.0, report_to="none", logging_steps=1,
        save_strategy="no", seed=0, dataloader_num_workers=0, temperature=temperature,
    )
    ds = Dataset.from_dict({"prompt": ["1+2=", "3-1=", "4+4=", "9-5="]})
    return ThrGRPOTrainer(model=model, reward_funcs=[alternating], args=args, train_dataset=ds,
                          processing_class=tok, thr=thr)


def _advantages_after_one_step(trainer: ThrGRPOTrainer) -> torch.Tensor:
    trainer.train()
    return torch.cat([b["advantages"] for b in trainer._buffered_inputs])  # [B, T]


def test_one_step_p_zero_is_plain_grpo(tmp_path):
    trainer = _trainer(tmp_path, ThrOptions(p=0.0))
    adv = _advantages_after_one_step(trainer)
    # Rewards (1, 0, 1, 0): mean .5, unbiased std sqrt(1/3), so A = +-.5 / (.57735 + 1e-4) = +-0.86588,
    # constant along each row.
    assert adv.dim() == 2
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    torch.testing.assert_close(adv.abs(), torch.full_like(adv, expected))
    assert bool((adv == adv[:, :1]).all())
    logs = {k for rec in trainer.state.log_history for k in rec}
    assert {"thr/dominant_frac", "thr/pos_frac", "thr/neg_frac", "thr/tau", "thr/abs_mean", "thr/time_s"} <= logs


def test_one_step_reweights_without_flipping_signs(tmp_path):
    trainer = _trainer(tmp_path, ThrOptions(p=0.5))
    adv = _advantages_after_one_step(trainer)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    # Every token's advantage is A_j * {0.5, 1, 1.5} with A_j's sign.
    ratio = adv.abs() / a
    near = [(ratio - v).abs() < 1e-5 for v in (0.5, 1.0, 1.5)]
    assert bool((near[0] | near[1] | near[2]).all())
    assert bool((adv * adv[:, :1] > 0).all())
    dom = [rec["thr/dominant_frac"] for rec in trainer.state.log_history if "thr/dominant_frac" in rec]
    assert dom and dom[0] > 0


def test_options_and_loss_validation(tmp_path):
    with pytest.raises(ValueError, match=r"thr.p=1.0 must be in \(-1, 1\)"):
        ThrOptions(p=1.0)
    tok = _tokenizer()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=16,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=4, report_to="none", beta=0.0,
                      importance_sampling_level="sequence")
    with pytest.raises(ValueError, match="token-level loss"):
        ThrGRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                       train_dataset=Dataset.from_dict({"prompt": ["1+1="]}), processing_class=tok,
                       thr=ThrOptions(p=0.1))


def test_thr_forward_aligns_with_trl_log_probs(tmp_path):
    # The adapter's logits/hidden must sit at the positions TRL scores: log_softmax(logits) at the
    # completion tokens equals TRL's fused per-token log-probs (same temperature), and lm_head(hidden)
    # reproduces the logits.
    trainer = _trainer(tmp_path, ThrOptions(p=0.2), temperature=0.8)
    trainer.train()
    batch = trainer._buffered_inputs[0]
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    t = batch["completion_ids"].shape[1]
    logits, hidden = trainer._thr_forward(ids, attn, t)
    with torch.no_grad():
        trl_logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, t)
    ours = logits.log_softmax(-1).gather(-1, batch["completion_ids"][..., None]).squeeze(-1)
    mask = batch["completion_mask"].bool()
    torch.testing.assert_close(ours[mask], trl_logps[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trainer.model.lm_head(hidden) / 0.8, logits, rtol=1e-5, atol=1e-6)
