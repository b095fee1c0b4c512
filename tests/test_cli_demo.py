"""`llmrl demo --output-dir DIR` never deletes a user's files: an existing non-empty DIR needs
--overwrite, and even then only a llmrl run folder (with recipe.yaml) is replaced."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "llmrl.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


# Every call below also passes a bad --set: if the folder check were missing the old demo would
# delete the folder first and then stop on the bad key, so the files' survival is what is tested.
BAD = ("--set", "trainer.no_such_key=1")


def test_existing_run_folder_needs_overwrite(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text("trainer: {}\n")
    (run / "checkpoints" / "step_100.pt").write_text("weights")
    proc = _cli("demo", "--output-dir", str(run), *BAD)
    assert proc.returncode == 2, proc.stderr
    assert "already exists and is not empty" in proc.stderr and "--overwrite" in proc.stderr
    assert (run / "checkpoints" / "step_100.pt").read_text() == "weights"


def test_bad_set_with_overwrite_leaves_the_run_folder_as_it_was(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("trainer: {}\n")
    proc = _cli("demo", "--output-dir", str(run), "--overwrite", *BAD)
    assert proc.returncode == 2 and "no_such_key" in proc.stderr
    assert (run / "recipe.yaml").exists()


def test_dot_is_never_deleted_even_with_overwrite(tmp_path):
    (tmp_path / "train.py").write_text("print('my code')\n")
    proc = _cli("demo", "--output-dir", ".", "--overwrite", *BAD, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "not a llmrl run folder" in proc.stderr
    assert (tmp_path / "train.py").read_text() == "print('my code')\n"


def test_non_run_folder_is_refused_even_with_overwrite(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    proc = _cli("demo", "--output-dir", str(mine), "--overwrite", *BAD)
    assert proc.returncode == 2 and "not a llmrl run folder" in proc.stderr
    assert (mine / "todo.txt").read_text() == "keep me"


def test_output_dir_that_is_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("data")
    proc = _cli("demo", "--output-dir", str(f), *BAD)
    assert proc.returncode == 2 and "is a file" in proc.stderr and f.read_text() == "data"
