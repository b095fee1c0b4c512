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
    # recipes/accelerate/ holds `accelerate launch --config_file` configs, not llmrl recipes
    recipes = sorted(r for r in (REPO / "recipes").rglob("*.yaml") if r.parent.name != "accelerate")
    assert recipes
    for r in recipes:
        load_recipe(r)


def test_parse_override_reads_numbers():
    assert parse_override("trainer.lr=1e-4") == (["trainer", "lr"], 1e-4)
    assert parse_override("data.use_chat_template=true") == (["data", "use_chat_template"], True)


def test_recipe_reference_is_current():
    from llmrl.config.docs import render

    assert (REPO / "docs" / "recipes.md").read_text() == render(), "regenerate: python -m llmrl.config.docs > docs/recipes.md"


# ------------------------------------- references resolve and args bind before any model loads
def _recipe(tmp_path, text):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    return recipe


@pytest.mark.parametrize("text, expected", [
    ("rewards:\n  - name: reward_fixtures:args_reward\n    args: {scael: 2}\n",
     ["rewards[0].args.scael", "Did you mean 'scale'"]),
    ("rewards:\n  - name: reward_fixtures:args_reward\n    args: {completions: [a]}\n",
     ["rewards[0].args.completions", "set by the trainer"]),
    ("rewards:\n  - name: reward_fixtures:length_reward\n  - name: reward_fixtures:length_reward\n",
     ["rewards[1].name", "already rewards[0]"]),
    ("rewards:\n  - name: mathh\n", ["rewards[0].name", "Did you mean 'math'"]),
    ("data:\n  name: arithmetic\n  args: {max_valeu: 9}\n", ["data.args.max_valeu", "Did you mean 'max_value'"]),
    ("data:\n  name: arithmetc\n", ["data.name", "arithmetic"]),
    ("rollout:\n  engine: nosuchmodule:factory\n", ["rollout.engine", "nosuchmodule"]),
    ("rollout:\n  engine: vllm\n", ["rollout.engine", "'vllm' is not available"]),
    ("model:\n  name_or_path: tiny://arithmatic\n", ["model.name_or_path", "Did you mean 'tiny://arithmetic'"]),
])
def test_reference_errors_exit_2_in_seconds_naming_the_key(tmp_path, text, expected):
    import os
    import time

    env = dict(os.environ, PYTHONPATH=str(REPO / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmrl.cli", "train", str(_recipe(tmp_path, text)),
                           "--set", f"trainer.output_dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    for piece in expected:
        assert piece in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing started: no model, no run folder
    assert time.perf_counter() - t0 < 60


def test_debug_shows_the_traceback(tmp_path):
    proc = _cli("train", str(_recipe(tmp_path, "rewards:\n  - name: mathh\n")), "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


@pytest.mark.parametrize("vllm, expected", [
    ("{mode: servr}", ["rollout.vllm.mode", "'colocated' or 'server'"]),
    ("{server_url: 'http://127.0.0.1:8000'}", ["rollout.vllm.server_url", "mode 'server' only"]),
    ("{weights_dir: runs/w}", ["rollout.vllm.weights_dir", "mode 'server' only"]),
    ("{mode: server, server_url: '127.0.0.1:8000'}", ["rollout.vllm.server_url", "http://HOST:PORT"]),
    ("{mode: server, sleep_mode: true}", ["rollout.vllm.sleep_mode", "mode 'colocated' only"]),
])
def test_vllm_mode_keys_are_checked_at_load(tmp_path, vllm, expected):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, f"rollout:\n  vllm: {vllm}\n"))
    assert all(e in str(err.value) for e in expected), str(err.value)


def test_vllm_server_mode_keys_load():
    from llmrl.config.schema import RecipeConfig

    cfg = RecipeConfig.model_validate({"rollout": {"vllm": {"mode": "server", "server_url": "http://127.0.0.1:8000"}}})
    assert cfg.rollout.vllm.mode == "server" and RecipeConfig().rollout.vllm.mode == "colocated"


def test_a_resume_may_point_at_another_vllm_server_but_not_change_the_mode():
    from llmrl.config.schema import RecipeConfig
    from llmrl.trainer.loop import resume_conflicts

    def cfg(vllm):
        return RecipeConfig.model_validate({"rollout": {"vllm": vllm}})

    saved = cfg({"mode": "server", "server_url": "http://127.0.0.1:8000"}).model_dump(mode="json")
    assert resume_conflicts(saved, cfg({"mode": "server", "server_url": "http://10.0.0.2:8001"})) == []
    assert resume_conflicts(saved, cfg({"mode": "server"})) == []
    assert [c.split(":")[0] for c in resume_conflicts(saved, cfg({}))] == ["rollout.vllm.mode"]


def test_one_vllm_server_url_for_several_processes_is_refused():
    from llmrl.config.schema import RecipeConfig
    from llmrl.trainer.loop import check_multi_process

    shared = RecipeConfig.model_validate({"rollout": {"engine": "vllm", "vllm": {
        "mode": "server", "server_url": "http://127.0.0.1:8000"}}})
    with pytest.raises(ValueError, match="rollout.vllm.server_url"):
        check_multi_process(shared, 2)
    check_multi_process(RecipeConfig.model_validate({"rollout": {"engine": "vllm", "vllm": {"mode": "server"}}}), 2)
