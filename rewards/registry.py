"""Names a recipe may use under ``rewards: - name: ...``.

Explicit and lazy: each entry is an import string, resolved only when a recipe asks for it, so
heavy rewards (sandbox, judges) cost nothing when unused. Any ``package.module:function`` works
too, which is how users plug in their own (TRL-compatible) reward functions."""
from __future__ import annotations

from typing import Callable

from llmrl.imports import resolve_callable

REWARDS: dict[str, str] = {
    "math": "llmrl.rewards.math:math_reward",
    "think_answer_format": "llmrl.rewards.format:think_answer_format_reward",
    "boxed_format": "llmrl.rewards.format:boxed_format_reward",
    "code": "llmrl.rewards.code:code_reward",
    "reward_model": "llmrl.rewards.reward_model:reward_model",
    "research_f1": "llmrl.rewards.research:research_f1_reward",
    "research_em": "llmrl.rewards.research:research_em_reward",
    "search_r1_em": "llmrl.rewards.research:search_r1_em_reward",
    "translation_exemplar": "llmrl.rewards.translation.rewards:exemplar_reward",
    "translation_metric": "llmrl.rewards.translation.rewards:metric_reward",
    "translation_language": "llmrl.rewards.translation.rewards:language_reward",
    "translation_gated": "llmrl.rewards.translation.gates:gated_reward",
}


def register_reward(name: str, target: str) -> None:
    """Add a named reward ('module:function'); refuses to silently replace an existing name."""
    if name in REWARDS and REWARDS[name] != target:
        raise ValueError(f"reward name {name!r} is already registered as {REWARDS[name]!r}; pick another name")
    REWARDS[name] = target


def resolve_reward(name: str) -> Callable:
    """The callable for a registered name or a 'module:function' import path."""
    return resolve_callable(name, REWARDS, key="rewards.name", what="reward")


# Names the trainer passes to every reward: a recipe's ``args`` may not set them.
TRAINER_KWARGS = ("prompts", "completions", "completion_ids", "trainer_state")


def check_reward_specs(specs) -> list[str]:
    """Problems with a recipe's ``rewards`` list, found without calling any reward: names that
    do not resolve, ``args`` that are not parameters of the function, duplicate short names, and
    what a reward's own ``check_args`` finds wrong with the values."""
    from llmrl.config.validate import unbound_args

    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        short = spec.name.rsplit(":", 1)[-1]
        if short in seen:
            problems.append(f"rewards[{i}].name: {short!r} is already rewards[{seen[short]}]; each reward must "
                            "appear once (its scores would be counted twice). Raise its weight instead, or "
                            "give the variant a name of its own")
        seen.setdefault(short, i)
        try:
            fn = resolve_reward(spec.name)
        except ValueError as exc:
            problems.append(str(exc).replace("rewards.name", f"rewards[{i}].name", 1))
            continue
        problems += unbound_args(fn, spec.args, f"rewards[{i}].args", reserved=TRAINER_KWARGS)
        # A reward may check its own arg values at load time: ``fn.check_args(args) -> [problem]``
        # (messages start with the arg's key, "backend: ...", and get the rewards[i].args prefix).
        check = getattr(fn, "check_args", None)
        if callable(check):
            problems += [f"rewards[{i}].args.{p}" for p in check(dict(spec.args or {}))]
    return problems
