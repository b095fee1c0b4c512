"""Every shipped recipe starts and runs one step (with a tiny model substituted for the real one),
so a recipe that cannot start fails CI instead of a user's first run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# recipes/accelerate/ holds `accelerate launch --config_file` configs, not llmrl recipes
RECIPES = sorted(r for r in (REPO / "recipes").rglob("*.yaml") if r.parent.name != "accelerate")
DATA = {"gsm8k": "gsm8k", "mbpp": "mbpp", "apps": "apps", "humaneval": "humaneval", "wmt22": "wmt22"}


def _params():
    for path in RECIPES:
        name = (yaml.safe_load(path.read_text()).get("data") or {}).get("name", "arithmetic")
        marks = [pytest.mark.requires_data(DATA[name])] if name in DATA else []
        yield pytest.param(path, id=str(path.relative_to(REPO / "recipes")), marks=marks)


@pytest.mark.parametrize("path", list(_params()))
def test_recipe_runs_one_step_with_a_tiny_model(path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    tiny = "tiny://code" if raw.get("rewards", [{}])[0].get("name") == "code" else "tiny://arithmetic"
    if not str(raw["model"]["name_or_path"]).startswith("tiny://"):
        substitutions = [f"model.name_or_path={tiny}", "model.dtype=float32"]
    else:
        substitutions = []
    sets = _sft_sets(tmp_path) if raw.get("task") == "sft" else [*substitutions, "model.warm_start=null", "trainer.steps=1", "trainer.prompts_per_step=2",
            "rollout.num_generations=2", "rollout.max_completion_length=8", "rollout.generation_batch_size=null",
            "data.train_size=4", "data.eval_size=2", "trainer.micro_batch_size=4", "algorithm.num_minibatches=1",
            "trainer.warmup_steps=0", "trainer.eval_every=1", "trainer.checkpoint_every=1", "trainer.device=cpu",
            "logging.progress=false", "logging.tensorboard=false", f"trainer.output_dir={tmp_path / 'run'}"]
    args = [sys.executable, "-m", "llmrl.cli", "train", str(path)]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps_this_session"] == 1
    assert (tmp_path / "run" / "final").is_dir()


def _sft_sets(tmp_path: Path) -> list[str]:
    """task: sft recipes: the tiny notes model on a few synthetic notes (a user's corpus is not here)."""
    return ["model.name_or_path=tiny://notes?hidden_size=32&num_layers=1", "model.dtype=float32",
            "data.name=clinical_notes", "data.args={size: 24, test_size: 4, num_canaries: 1, canary_repeats: 2}",
            "sft.batch_size=8", "sft.micro_batch_size=4", "sft.epochs=0.3", "sft.eval_size=4", "sft.max_length=32",
            "sft.exposure_candidates=5", "trainer.checkpoint_every=1", "trainer.device=cpu",
            "logging.progress=false", f"trainer.output_dir={tmp_path / 'run'}"]
