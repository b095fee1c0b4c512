"""Research-agent evaluation: answer F1 / EM per data set with tool statistics.

One function for ``llmrl eval research`` and ``bench/research_learning.py``. F1 and EM are the
reward's (``llmrl.rewards.research``) with a format failure counted as 0 (it scores -1 as a
reward); ``format_fail`` reports how often that happened."""
from __future__ import annotations

from typing import Any

from llmrl.rewards.research import research_score
from llmrl.rollout.types import SamplingParams


def evaluate_agent(engine, prompts: list[str], answers: list[list[str]], *, max_new_tokens: int,
                   batch_size: int = 64, greedy: bool = True, temperature: float = 1.0,
                   progress: bool = False) -> dict[str, Any]:
    """Mean F1, EM, format failures and per-question tool statistics of one rollout per prompt
    (greedy by default) through an ``AgentEngine``."""
    from llmrl.progress import progress as progress_bar

    sampling = SamplingParams(max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature)
    f1 = em = fails = 0.0
    totals: dict[str, float] = {"turns": 0, "searches": 0, "browses": 0, "malformed": 0, "timeouts": 0,
                                "errors": 0, "answered": 0}
    bar = progress_bar(total=len(prompts), desc="research eval", enabled=progress, leave=False)
    for start in range(0, len(prompts), batch_size):
        batch = engine.generate(prompts[start:start + batch_size], sampling, n=1)
        for completion, gold, st in zip(batch.completions, answers[start:start + batch_size], batch.extras["agent"]):
            s_f1 = research_score(completion, gold, metric="f1")
            fails += s_f1 < 0
            f1 += max(s_f1, 0.0)
            em += max(research_score(completion, gold, metric="em"), 0.0)
            for k in totals:
                totals[k] += bool(st[k]) if k == "malformed" else float(st[k])
        bar.update(len(batch))
    bar.close()
    n = max(1, len(prompts))
    out = {"n": len(prompts), "f1": f1 / n, "em": em / n, "format_fail": fails / n}
    out.update({f"{k}_per_question": v / n for k, v in totals.items()})
    return out
