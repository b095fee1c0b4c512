"""The tiny function-writing task: splits, canonical bodies pass their hidden tests in the real
sandbox, near misses fail with the right level, and the recipe loads and runs a few steps."""
from __future__ import annotations

import json

from llmrl.config.load import load_recipe
from llmrl.data.code_tiny import all_tasks, canonical_body, code_tiny_dataset
from llmrl.paths import REPO_ROOT
from llmrl.rewards.code import code_reward

RECIPE = REPO_ROOT / "recipes" / "tiny" / "code_grpo.yaml"


def test_splits_are_disjoint_and_cover_the_space():
    # 5 ops x 9 constants = 45 one-step tasks, 45^2 = 2025 two-step tasks: 2070 in all
    assert len(all_tasks()) == 2070
    ids = {s: set(code_tiny_dataset(split=s, n=None, seed=0)["task_id"]) for s in ("train", "validation", "test")}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"])
    assert sum(len(v) for v in ids.values()) == 2070
    # same seed, same rows; the warm start may ask for more rows than a split holds (drawn again)
    assert code_tiny_dataset(split="train", n=5, seed=3)["prompt"] == code_tiny_dataset(split="train", n=5, seed=3)["prompt"]
    assert len(code_tiny_dataset(split="train", n=3000, seed=0)) == 3000


def test_canonical_bodies_are_short_and_precedence_correct():
    # (x+3)*2 needs parentheses, x*3+1 does not; every body fits the warm start's 8-token check
    assert canonical_body([("plus", 3), ("times", 2)]) == "(x+3)*2"
    assert canonical_body([("times", 3), ("plus", 1)]) == "x*3+1"
    assert max(len(canonical_body(t)) for t in all_tasks()) <= 8
    row = code_tiny_dataset(split="test", n=1, seed=0)[0]
    assert row["prompt"].startswith("# ") and row["prompt"].endswith("\nreturn ")
    assert json.loads(row["tests"])["asserts"][0].startswith("assert f(-3) == ")


def test_canonical_answers_pass_and_near_misses_fail_in_the_sandbox():
    ds = code_tiny_dataset(split="test", n=None, seed=0)
    r = code_reward(ds["prompt"], ds["answer"], tests=ds["tests"], program_prefix=ds["program_prefix"])
    assert list(r) == [1.0] * len(ds)  # all 366 held-out canonical bodies pass
    # "plus 3 times 2": 2*(x+3). Near misses: x+3*2 (precedence) is wrong (-0.3), an unbalanced
    # paren does not compile (-1.0), 3*2+x*2 is a different correct body (+1.0).
    row = code_tiny_dataset(split="train", n=None, seed=0)
    tests = json.dumps({"kind": "assert", "setup_code": "",
                        "asserts": [f"assert f({x}) == {(x + 3) * 2}" for x in (-3, 0, 2, 7, 11)]})
    r = code_reward(["p"] * 4, ["(x+3)*2", "x+3*2", "(x+3*2", "3*2+x*2"], tests=[tests] * 4,
                    program_prefix=[row["program_prefix"][0]] * 4)
    assert list(r) == [1.0, -0.3, -1.0, 1.0]


def test_recipes_load():
    cfg = load_recipe(RECIPE, [])
    assert cfg.data.name == "code_tiny" and cfg.rewards[0].name == "code"
    assert load_recipe(REPO_ROOT / "recipes" / "code_grpo.yaml", []).data.name == "mbpp"


def test_tiny_code_recipe_smoke(tmp_path):
    """A few GRPO steps with the real sandbox reward, from a random-init model (no warm start);
    about 15 s on the 2-core machine."""
    from llmrl.trainer.loop import train

    cfg = load_recipe(RECIPE, [f"trainer.output_dir={tmp_path}", "trainer.steps=3", "trainer.eval_every=0",
                               "trainer.checkpoint_every=0", "trainer.prompts_per_step=8", "data.eval_size=16",
                               "model.warm_start=null", "logging.progress=false", "logging.plot=false",
                               "trainer.degenerate_patience=10", "trainer.warmup_steps=0", "trainer.num_threads=1"])
    summary = train(cfg)
    assert summary["steps"] == 3
    samples = (tmp_path / "samples.jsonl").read_text()
    assert '"outcome"' in samples  # per-sample details from the code reward reach the logs
