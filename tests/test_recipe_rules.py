"""Contradictory recipe options are refused at load, naming the key and what is allowed;
TRL's option names are accepted as aliases of ours; data.eval_size: 0 skips evaluation cleanly."""
import json
import math

import pytest
import yaml

from llmrl.config.load import RecipeError, dump_recipe, validate_recipe


def _problems(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    return str(info.value)


# ------------------------------------------------------------------ contradictory options
def test_clip_eps_high_below_low_is_refused():
    msg = _problems({"algorithm": {"clip_eps_low": 0.3, "clip_eps_high": 0.2}})
    assert "algorithm.clip_eps_high" in msg and "clip_eps_high >= 0.3" in msg
    validate_recipe({"algorithm": {"clip_eps_low": 0.2, "clip_eps_high": 0.28}})  # DAPO clip-higher
    validate_recipe({"algorithm": {"clip_eps_low": 0.2, "clip_eps_high": 0.2}})


def test_thr_options_while_thr_is_off_are_refused():
    msg = _problems({"algorithm": {"token_weighting": {"p": 0.2, "mode": "mask"}}})
    assert "algorithm.token_weighting" in msg and "mode, p" in msg and "'none', 'thr'" in msg
    # the same options with THR on are fine, and so is type none alone
    validate_recipe({"algorithm": {"token_weighting": {"type": "thr", "p": 0.2, "mode": "mask"}}})
    validate_recipe({"algorithm": {"token_weighting": {"type": "none"}}})


def test_a_dumped_recipe_with_thr_off_loads_again():
    # recipe.yaml writes every key out, defaults included: explicitly set, but not contradictory
    cfg = validate_recipe({})
    again = validate_recipe(yaml.safe_load(dump_recipe(cfg)))
    assert again == cfg


def test_train_size_below_prompts_per_step_is_refused():
    msg = _problems({"data": {"train_size": 8}, "trainer": {"prompts_per_step": 16}})
    assert "data.train_size" in msg and "trainer.prompts_per_step (16)" in msg and "or null" in msg
    validate_recipe({"data": {"train_size": None}, "trainer": {"prompts_per_step": 16}})
    validate_recipe({"data": {"train_size": 16}, "trainer": {"prompts_per_step": 16}})


def test_all_contradictions_are_reported_at_once():
    msg = _problems({"algorithm": {"clip_eps_low": 0.3, "clip_eps_high": 0.1, "token_weighting": {"beta": 2.0}},
                     "data": {"train_size": 1}})
    assert "3 problem(s)" in msg
    lines = [x for x in msg.splitlines() if x.startswith("  - ")]
    assert [x.split(":")[0] for x in lines] == ["  - algorithm.clip_eps_high", "  - algorithm.token_weighting",
                                                "  - data.train_size"], msg


def test_eval_size_zero_trains_without_eval_metrics(tmp_path):
    from llmrl.trainer.loop import train

    raw = {
        "model": {"name_or_path": "tiny://arithmetic"},
        "data": {"name": "arithmetic", "train_size": 16, "eval_size": 0},
        "rollout": {"num_generations": 2, "max_completion_length": 4, "max_prompt_length": 32},
        "rewards": [{"name": "reward_fixtures:length_reward"}],
        "trainer": {"steps": 2, "prompts_per_step": 4, "micro_batch_size": 8, "seed": 0, "device": "cpu",
                    "output_dir": str(tmp_path / "run"), "eval_every": 1, "checkpoint_every": 0},
        "logging": {"progress": False, "tensorboard": False, "plot": False},
    }
    summary = train(validate_recipe(raw))
    assert not any(k.startswith("eval/") for k in summary), summary  # absent, never nan
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary.values())
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2]
    assert not any(k.startswith("eval/") for r in rows for k in r)


# ------------------------------------------------------------------ TRL's names as aliases
@pytest.mark.parametrize("section, trl, ours, value", [
    ("trainer", "max_steps", "steps", 7),
    ("algorithm", "beta", "kl_coef", 0.04),
    ("algorithm", "epsilon", "clip_eps_low", 0.1),
    ("algorithm", "epsilon_high", "clip_eps_high", 0.28),
    ("algorithm", "num_iterations", "epochs", 3),
])
def test_trl_names_are_aliases_of_ours(section, trl, ours, value):
    by_trl = validate_recipe({section: {trl: value}})
    by_ours = validate_recipe({section: {ours: value}})
    assert getattr(getattr(by_trl, section), ours) == value
    assert by_trl == by_ours
    assert ours in yaml.safe_load(dump_recipe(by_trl))[section]  # saved under our name
    msg = _problems({section: {trl: value, ours: value}})
    assert f"{section}: both {ours} and {trl} are set" in msg and "only one" in msg


def test_alias_conflict_from_the_command_line_exits_2(tmp_path):
    import subprocess
    import sys

    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer:\n  steps: 5\n")
    proc = subprocess.run([sys.executable, "-m", "llmrl.cli", "train", str(recipe), "--set", "trainer.max_steps=9"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "both steps and max_steps are set" in proc.stderr and "Traceback" not in proc.stderr


def test_typo_of_a_trl_name_suggests_it():
    assert "Did you mean 'num_iterations'" in _problems({"algorithm": {"num_iteration": 2}})


def test_recipe_reference_shows_trl_names():
    from llmrl.config.docs import render

    assert "| `steps` (TRL: `max_steps`) |" in render()
