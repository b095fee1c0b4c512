"""`--set KEY=VALUE` overrides: list indexing, values kept as the user typed them, clear errors."""
import subprocess
import sys
from pathlib import Path

import pytest

from llmrl.config.load import RecipeError, apply_overrides, load_recipe, parse_override

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "recipes" / "tiny" / "math_grpo.yaml"


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "llmrl.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_set_indexes_lists_in_a_real_recipe():
    cfg = load_recipe(TINY, ["rewards.0.weight=2"])
    assert cfg.rewards[0].weight == 2.0 and cfg.rewards[0].name == "math"


def test_set_list_index_out_of_range_or_not_a_number():
    with pytest.raises(RecipeError, match="1 entries, no index 3"):
        apply_overrides({"rewards": [{"name": "math"}]}, ["rewards.3.weight=2"])
    with pytest.raises(RecipeError, match="is a list; index it with a number"):
        apply_overrides({"rewards": [{"name": "math"}]}, ["rewards.weight=2"])


@pytest.mark.parametrize("raw, expected", [
    ("a: b", "a: b"),                 # YAML would make this a mapping {'a': 'b'}
    ("2024-01-01", "2024-01-01"),     # YAML would make this a datetime.date
    ("x # note", "x # note"),         # YAML would drop the text after '#'
    ("1e-4", 1e-4), ("4", 4), ("-2", -2), ("0.5", 0.5), ("true", True), ("False", False),
    ("null", None), ("none", "none"), ("[1, 2]", [1, 2]), ("{a: 1}", {"a": 1}), ("yes", "yes"), ("+-", "+-"),
])
def test_set_values_are_kept_as_typed(raw, expected):
    assert parse_override(f"data.args.x={raw}") == (["data", "args", "x"], expected)


def test_set_value_with_colon_reaches_the_recipe_as_text():
    cfg = load_recipe(TINY, ["data.args.ops=a: b", "logging.samples_per_step=2"])
    assert cfg.data.args["ops"] == "a: b"


def test_list_recipe_with_set_exits_2_with_a_message(tmp_path):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- trainer: {steps: 1}\n- model: {}\n")
    proc = _cli("train", str(recipe), "--set", "trainer.lr=1e-4")
    assert proc.returncode == 2, proc.stderr
    assert "must be a YAML mapping" in proc.stderr and "got a list" in proc.stderr
    assert "Traceback" not in proc.stderr
