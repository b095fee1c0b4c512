"""Recipe errors stop with exit code 2 and name the key, the value and what is allowed."""
import subprocess
import sys
from pathlib import Path

import pytest

from llmrl.config.load import RecipeError, load_recipe, parse_override

REPO = Path(__file__).resolve().parent.parent


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "llmrl.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_unknown_key_suggests_and_exits_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer:\n  lrr: 0.1\n")
    proc = _cli("train", str(recipe))
    assert proc.returncode == 2
    assert "trainer.lrr" in proc.stderr and "Did you mean 'lr'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_type_and_range_are_all_reported(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rollout:\n  num_generations: many\ntrainer:\n  steps: -3\n")
    proc = _cli("train", str(recipe))
    assert proc.returncode == 2
    assert "rollout.num_generations" in proc.stderr and "'many'" in proc.stderr
    assert "trainer.steps" in proc.stderr and "greater than 0" in proc.stderr


def test_missing_file_exits_2(tmp_path):
    proc = _cli("train", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_bad_override_and_cross_field_rule(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("algorithm:\n  policy_loss: gspo\n  token_weighting: {type: thr}\n")
    with pytest.raises(RecipeError, match="gspo_token"):
        load_recipe(recipe)
    proc = _cli("train", str(recipe), "--set", "algorithm.policy_loss=ppo_clip", "--set", "algorithm.num_minibatches=7")
    assert proc.returncode == 2 and "num_minibatches" in proc.stderr


def test_every_shipped_recipe_validates():
    recipes = sorted((REPO / "recipes").rglob("*.yaml"))
    assert recipes
    for r in recipes:
        load_recipe(r)


def test_parse_override_reads_numbers():
    assert parse_override("trainer.lr=1e-4") == (["trainer", "lr"], 1e-4)
    assert parse_override("data.use_chat_template=true") == (["data", "use_chat_template"], True)


def test_recipe_reference_is_current():
    from llmrl.config.docs import render

    assert (REPO / "docs" / "recipes.md").read_text() == render(), "regenerate: python -m llmrl.config.docs > docs/recipes.md"
