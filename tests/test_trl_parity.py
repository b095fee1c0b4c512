"""Our clipped-surrogate loss against the installed trl's GRPO loss, side by side (DESIGN.md, decision 2).

A real ``trl.GRPOTrainer`` and our ``forward_completions`` + ``policy_loss`` score the same hand-built
batch on the same model parameters: left-padded prompts, right-padded completions of different
lengths, advantages of both signs, old log-probs perturbed so the importance ratio is not 1 and
both clip sides bind, reference log-probs when beta > 0. Loss values and the gradients w.r.t.
every model parameter must agree.

Mapping (TRL ``loss_type`` -> our ``algorithm.loss_agg``):

    grpo     -> seq-mean-token-mean
    bnpo     -> token-mean
    dr_grpo  -> seq-mean-token-sum-norm, max_len = max_completion_length (not the batch width)
    dapo     -> token-mean normalised by num_items_in_batch (our num_tokens): the token count of
                the whole generation batch, of which this batch is one micro-batch
    importance_sampling_level="sequence" (GSPO) with grpo -> policy_loss="gspo" (and "gspo_token",
                which has the same value and, with per-sequence advantages, the same gradient)

TRL's KL term is k3. TRL >= 1.x multiplies it by the (differentiable) importance ratio by
default (``use_bias_correction_kl=True``, DeepSeek-V3.2); we have no such option, so the
comparison sets it to False (the GRPO paper's eq. 3).

Both losses are compared where TRL's gradient-accumulation normaliser is 1: train mode with
``current_gradient_accumulation_steps = 1`` and ``steps_per_generation = 1``.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from llmrl.algorithms.losses import policy_loss  # noqa: E402
from llmrl.models.tiny import build_char_tokenizer, build_tiny_model  # noqa: E402
from llmrl.rollout.types import PAD, POLICY, RolloutBatch  # noqa: E402
from llmrl.trainer.forward import forward_completions  # noqa: E402

# transformers' TrainingArguments warns about its own renamed field on every GRPOConfig
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")

EPS_LOW, EPS_HIGH = 0.2, 0.28
TEMPERATURE = 0.7          # != 1 so both sides must scale the logits the same way
MAX_COMPLETION_LENGTH = 9  # > the batch's completion width (7): dr_grpo must use this, not the width

PROMPTS = ["1+1=", "12+34-5=", "7-3=", "99-9+1=", "5+5=", "40-2="]
COMPLETIONS = ["2", "41", "4", "91", "10", "38"]
# per row: completion text + <eos>, except row 3 which is truncated (no end token, fills width 7)
TRUNCATED_ROW, WIDTH = 3, 7
ADVANTAGES = [1.2, -0.8, 0.5, -1.5, 0.9, -0.3]
# per-row offset of log(pi / pi_old): rows 0 and 4 (A > 0) sit above 1 + eps_high, rows 1 and 3
# (A < 0) below 1 - eps_low, so the clip binds on both sides at the token and the sequence level;
# rows 2 and 5 stay inside the trust region.
ROW_LOG_RATIO = [0.45, -0.5, 0.05, -0.45, 0.4, -0.05]

TRL_TO_OURS = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm",
               "dapo": "token-mean"}
DAPO_BATCH_FACTOR = 3.0  # num_items_in_batch = 3 x this batch's tokens (one micro-batch of three)


def _zero_reward(prompts, completions, **kwargs):
    return [0.0] * len(prompts)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_model"), hidden_size=64, num_layers=2, num_heads=4))


def make_trainer(model_dir, output_dir, *, loss_type: str, beta: float, level: str) -> GRPOTrainer:
    args = GRPOConfig(
        output_dir=str(output_dir), report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
        bf16=False,  # TRL defaults to bf16=True, which autocasts even on CPU (log-probs off by ~3e-3)
        per_device_train_batch_size=len(PROMPTS), num_generations=2, gradient_accumulation_steps=1,
        max_completion_length=MAX_COMPLETION_LENGTH, temperature=TEMPERATURE,
        loss_type=loss_type, beta=beta, epsilon=EPS_LOW, epsilon_high=EPS_HIGH,
        importance_sampling_level=level, use_bias_correction_kl=False,
    )
    trainer = GRPOTrainer(model=model_dir, reward_funcs=_zero_reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=build_char_tokenizer())
    # Train mode with no accumulation: TRL's normaliser is 1 (set by Trainer's loop, which we don't run).
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    assert trainer.args.steps_per_generation == 1
    return trainer


def make_batch(tok) -> RolloutBatch:
    """6 rows: left-padded prompts of 5-9 tokens, right-padded completions of 2-7 tokens."""
    enc = tok(PROMPTS, padding=True, return_tensors="pt")  # <bos> + chars, left padding
    rows = []
    for i, text in enumerate(COMPLETIONS):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids = (ids * WIDTH)[:WIDTH] if i == TRUNCATED_ROW else ids + [tok.eos_token_id]
        rows.append(ids)
    completion_ids = torch.full((len(rows), WIDTH), tok.pad_token_id)
    owner = torch.full((len(rows), WIDTH), PAD, dtype=torch.int8)
    for i, ids in enumerate(rows):
        completion_ids[i, :len(ids)] = torch.tensor(ids)
        owner[i, :len(ids)] = POLICY
    return RolloutBatch(
        prompt_ids=enc["input_ids"], prompt_mask=enc["attention_mask"], completion_ids=completion_ids,
        token_owner=owner, group_ids=torch.arange(len(rows)) // 2,
        finish_reason=["length" if i == TRUNCATED_ROW else "stop" for i in range(len(rows))],
        prompts=PROMPTS, completions=COMPLETIONS,
    )


def perturbed(current: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(old, ref) log-probs: old = current - (row offset + token noise), so the ratio pi/pi_old
    spreads around exp(ROW_LOG_RATIO); ref = current + noise. Padding positions hold a finite
    junk value (both sides must mask it out)."""
    g = torch.Generator().manual_seed(0)
    log_ratio = torch.tensor(ROW_LOG_RATIO).unsqueeze(1) + 0.15 * torch.randn(current.shape, generator=g)
    old = torch.where(mask.bool(), current - log_ratio, torch.full_like(current, -3.0))
    ref = current + 0.3 * torch.randn(current.shape, generator=g)
    return old, ref


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


CASES = [  # (TRL loss_type, importance_sampling_level, our policy_loss kind)
    ("grpo", "token", "ppo_clip"),
    ("bnpo", "token", "ppo_clip"),
    ("dr_grpo", "token", "ppo_clip"),
    ("dapo", "token", "ppo_clip"),
    ("grpo", "sequence", "gspo"),
    ("grpo", "sequence", "gspo_token"),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trl_and_ours(model_dir, output_dir, *, loss_type: str, level: str, kind: str, beta: float):
    """Both losses and both sets of parameter gradients on the same batch and parameters."""
    trainer = make_trainer(model_dir, output_dir, loss_type=loss_type, beta=beta, level=level)
    model = trainer.model
    batch = make_batch(trainer.processing_class)
    mask = batch.loss_mask.float()  # [N, C]; here every completion token is a policy token
    rows = torch.arange(len(batch))

    with torch.no_grad():
        current = forward_completions(model, batch, rows, temperature=TEMPERATURE).logps  # [N, C]
    old, ref = perturbed(current, mask)
    advantages = torch.tensor(ADVANTAGES)  # [N]

    # The batch really exercises both clip sides (and the unclipped region) at the level compared.
    ratio = torch.exp(current - old)
    if level == "sequence":
        ratio = torch.exp(((current - old) * mask).sum(1) / mask.sum(1)).unsqueeze(1).expand_as(mask)
    m, a = mask.bool(), advantages.unsqueeze(1).expand_as(mask)
    assert ((ratio > 1 + EPS_HIGH) & (a > 0) & m).any(), "upper clip never binds"
    assert ((ratio < 1 - EPS_LOW) & (a < 0) & m).any(), "lower clip never binds"
    assert ((ratio > 1 - EPS_LOW) & (ratio < 1 + EPS_HIGH) & m).any(), "no token inside the trust region"

    num_items = mask.sum() * DAPO_BATCH_FACTOR
    inputs = {
        "prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask,
        "completion_ids": batch.completion_ids, "completion_mask": batch.completion_mask,
        "advantages": advantages, "old_per_token_logps": old, "num_items_in_batch": num_items,
    }
    if beta > 0:
        inputs["ref_per_token_logps"] = ref

    model.zero_grad(set_to_none=True)
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = grads(model)

    model.zero_grad(set_to_none=True)
    logps = forward_completions(model, batch, rows, temperature=TEMPERATURE).logps
    our_loss, _ = policy_loss(
        logps, old, advantages, mask, kind=kind, clip_eps_low=EPS_LOW, clip_eps_high=EPS_HIGH,
        loss_agg=TRL_TO_OURS[loss_type], kl_coef=beta, ref_logps=ref if beta > 0 else None, kl_estimator="k3",
        num_tokens=float(num_items) if loss_type == "dapo" else None, max_len=MAX_COMPLETION_LENGTH,
    )
    our_loss.backward()
    return trl_loss.item(), our_loss.item(), trl_grads, grads(model)


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type,level,kind", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_loss_and_gradients_match_trl(model_dir, tmp_path, loss_type, level, kind, beta):
    trl_loss, our_loss, trl_grads, our_grads = trl_and_ours(model_dir, tmp_path, loss_type=loss_type, level=level,
                                                            kind=kind, beta=beta)
    assert abs(trl_loss) > 1e-3  # a real, non-trivial loss
    assert our_loss == pytest.approx(trl_loss, abs=1e-6)
    assert set(our_grads) == set(trl_grads) and len(our_grads) > 0
    scale = max(g.abs().max().item() for g in trl_grads.values())
    assert scale > 1e-4  # gradients are not vanishing
    for name, g in trl_grads.items():
        torch.testing.assert_close(our_grads[name], g, rtol=1e-5, atol=1e-6, msg=lambda s: f"{name}: {s}")
