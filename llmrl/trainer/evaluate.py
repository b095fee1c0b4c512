"""Held-out greedy evaluation: one path for the warm start's early stop and the trainer's
``eval/accuracy``, so both report the same number for the same model (same engine, prompt
formatting, reward and success rule)."""
from __future__ import annotations

from typing import Any

import torch

from llmrl.config.schema import RecipeConfig
from llmrl.rewards.runner import RewardFn, score
from llmrl.rollout.types import SamplingParams


def format_prompts(cfg: RecipeConfig, tokenizer, raw: list[str]) -> list[str]:
    """Prompt texts as the policy sees them (chat template applied when the recipe asks)."""
    if not cfg.data.use_chat_template:
        return list(raw)
    out = []
    for text in raw:
        messages = ([{"role": "system", "content": cfg.data.system_prompt}] if cfg.data.system_prompt else [])
        messages.append({"role": "user", "content": text})
        out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out


def columns_for(dataset, indices: list[int], prompt_column: str, repeat: int) -> dict[str, list]:
    """Dataset columns for the chosen rows, each repeated G times (one per completion)."""
    rows = dataset[list(indices)]  # one read of every column (select + per-column reads are 7x slower)
    return {c: [v for v in values for _ in range(repeat)] for c, values in rows.items() if c != prompt_column}


@torch.no_grad()
def greedy_eval(engine, tokenizer, cfg: RecipeConfig, data, reward_fns: list[RewardFn], *,
                batch_size: int = 256, trainer_state: Any = None) -> dict[str, float]:
    """Greedy completions of every held-out prompt, scored by the recipe's rewards.

    ``eval/accuracy``: share of prompts whose first reward (the task's verifier) is >=
    ``trainer.eval_success_threshold``, or that reward's mean when the threshold is None
    (continuous rewards). ``eval/reward_mean``: the mean combined reward."""
    if len(data) == 0:
        return {}
    threshold = cfg.trainer.eval_success_threshold
    sampling = SamplingParams(max_new_tokens=cfg.rollout.max_completion_length, greedy=True,
                              stop=tuple(cfg.rollout.stop))
    success, total = 0.0, 0.0
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        raw = data.select(idx)[cfg.data.prompt_column]
        batch = engine.generate(format_prompts(cfg, tokenizer, raw), sampling, n=1)
        res = score(raw, batch.completions, columns_for(data, idx, cfg.data.prompt_column, 1), reward_fns,
                    completion_ids=batch.policy_ids(), trainer_state=trainer_state)
        first = torch.nan_to_num(res.per_reward[reward_fns[0].name], nan=0.0)
        success += float((first >= threshold).sum()) if threshold is not None else float(first.sum())
        total += float(res.total.sum())
    return {"eval/accuracy": success / len(data), "eval/reward_mean": total / len(data)}
