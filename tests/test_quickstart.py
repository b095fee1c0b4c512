"""docs/quickstart.md runs as written: every ```bash block, in order, in a fresh folder."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "quickstart.md"


def blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_the_walk_through():
    text = "\n".join(blocks())
    for piece in ("llmrl train", "--resume", "llmrl eval", "llmrl compare", "my_rewards:", "name: file"):
        assert piece in text


@pytest.mark.requires_data("mbpp")
def test_quickstart_runs_as_written(tmp_path):
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    for i, block in enumerate(blocks()):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"block {i}:\n{block}\n--- stderr:\n{proc.stderr[-3000:]}"
    quick = tmp_path / "runs" / "quick"
    assert json.loads((quick / "grpo_seed0" / "summary.json").read_text())["resumed_from"] == [12]
    assert (quick / "eval_seed0" / "summary.json").is_file()
    report = json.loads((quick / "compare.json").read_text())
    assert report
    assert json.loads((quick / "my_task" / "summary.json").read_text())["steps_this_session"] == 3
