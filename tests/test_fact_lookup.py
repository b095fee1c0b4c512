"""The tiny research task: held-out questions need search, and the warm-start traces hold
exactly the tool turn the agent loop appends (so warm start and RL see the same tokens)."""
import json

import torch

from llmrl.data.fact_lookup import fact_lookup_dataset, search_backend, world
from llmrl.models.tiny import build_char_tokenizer
from llmrl.research.tools import research_tools
from llmrl.rewards.research import research_f1_reward
from llmrl.rollout.agent import AgentEngine, AgentLimits
from llmrl.rollout.types import POLICY, SamplingParams, Trajectory, batch_from_trajectories


def test_splits_ask_about_disjoint_entities():
    train = fact_lookup_dataset("train", n=None, num_entities=40)
    test = fact_lookup_dataset("test", n=None, num_entities=40)
    names = lambda ds: {q.rsplit(" ", 1)[-1].rstrip("?") for q in ds["question"]}  # noqa: E731
    assert len(train) == 30 and len(test) == 10 and not names(train) & names(test)
    assert {e["name"] for e in world(40)} == names(train) | names(test)


def test_tiny_recipe_warm_start_rl_and_heldout_ask_about_disjoint_entities():
    """The tiny research benchmark's claim (RL raises held-out F1) needs the warm start's
    demonstrations, RL's questions and the held-out questions to be three disjoint entity sets."""
    from pathlib import Path

    from llmrl.config.load import load_recipe
    from llmrl.data.fact_lookup import split_entities

    cfg = load_recipe(Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "research_grpo.yaml")
    assert cfg.model.warm_start.split == "warm"
    world_args = {k: v for k, v in cfg.data.args.items() if k != "guess_fraction"}   # guesses change no split
    sets = {s: {e["name"] for e in split_entities(s, **world_args)} for s in ("warm", "train", "test")}
    assert all(sets.values()) and sum(map(len, sets.values())) == cfg.data.args["num_entities"]
    assert not (sets["warm"] & sets["train"] or sets["warm"] & sets["test"] or sets["train"] & sets["test"])
    assert cfg.agent.search_args["num_entities"] == cfg.data.args["num_entities"]   # every answer is in the index


class Replay:
    """Plays the demonstration's policy turns (the text between tool turns) as sampled ids."""

    def __init__(self, tok, turns):
        self.tok, self.turns = tok, list(turns)

    def generate_tokens(self, contexts, sampling, *, n=1):
        t = Trajectory(prompt_ids=list(contexts[0]))
        t.extend(self.tok(self.turns.pop(0), add_special_tokens=False)["input_ids"], POLICY)
        return batch_from_trajectories([t], pad_id=self.tok.pad_token_id, group_ids=torch.arange(1))


def test_demonstration_is_what_the_agent_loop_produces():
    tok = build_char_tokenizer()
    row = fact_lookup_dataset("test", n=1, num_entities=40)[0]
    trace = row["answer"]
    first, rest = trace.split("</tool_call>", 1)
    last = rest[rest.index("<think>"):]
    engine = AgentEngine(Replay(tok, [first + "</tool_call>", last]), tok,
                         research_tools(search_backend(40), k=1), AgentLimits(max_total_tokens=1000))
    prompt_ids = tok(row["prompt"])["input_ids"]                      # as the trainer encodes it (<bos> added)
    batch = engine.generate_tokens([prompt_ids], SamplingParams(max_new_tokens=500), n=1)
    ids, _, _ = batch.row(0)
    assert ids == tok(trace, add_special_tokens=False)["input_ids"]
    assert batch.extras["agent"][0]["searches"] == 1
    assert research_f1_reward([""], batch.completions, answers=[row["answers"]]) == [1.0]
    assert json.loads(first.split("<tool_call>")[1])["arguments"]["query"] == [row["question"].split(" of ")[1][:-1]]


def test_guess_fraction_turns_that_share_of_warm_demonstrations_into_searchless_guesses():
    """The mixed warm start (data.args.guess_fraction): a share of the warm split's traces answer
    without a tool call, drawn per row (the same entity gets both kinds), and score F1 0; the rows
    that still search, every question and the train/test splits are what they are without it."""
    args = dict(num_entities=40, warm_fraction=0.5)
    plain = fact_lookup_dataset("warm", n=400, **args)
    mixed = fact_lookup_dataset("warm", n=400, guess_fraction=0.5, **args)
    assert mixed["prompt"] == plain["prompt"] and mixed["answers"] == plain["answers"]
    guessed = ["<tool_call>" not in a for a in mixed["answer"]]
    assert abs(sum(guessed) / len(guessed) - 0.5) < 0.08
    for g, a, p in zip(guessed, mixed["answer"], plain["answer"]):
        assert (a.startswith("<think>a</think><answer>") and "<|tool|>" not in a) if g else a == p
    by_name = {}
    for g, q in zip(guessed, mixed["question"]):
        by_name.setdefault(q, set()).add(g)
    assert sum(kinds == {True, False} for kinds in by_name.values()) > len(by_name) // 2   # not by a feature of the name
    tok = build_char_tokenizer()
    row = next(r for r, g in zip(mixed, guessed) if g)
    engine = AgentEngine(Replay(tok, [row["answer"]]), tok, research_tools(search_backend(40), k=1), AgentLimits())
    batch = engine.generate_tokens([tok(row["prompt"])["input_ids"]], SamplingParams(max_new_tokens=200), n=1)
    assert batch.extras["agent"][0]["searches"] == 0
    assert research_f1_reward([""], batch.completions, answers=[row["answers"]], format_penalty=-1.0) == [0.0]
    for split in ("train", "test"):
        assert fact_lookup_dataset(split, n=50, guess_fraction=0.5, **args).to_dict() == \
            fact_lookup_dataset(split, n=50, **args).to_dict()


def test_guess_fraction_out_of_range_names_the_key():
    import pytest

    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="data.args.guess_fraction"):
            fact_lookup_dataset("warm", n=2, num_entities=40, warm_fraction=0.5, guess_fraction=bad)
