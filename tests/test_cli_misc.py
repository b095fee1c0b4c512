"""`llmrl --version`, help laid out wider than 80 columns when not on a terminal, progress bars
that do not flood a log file."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(args, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LLMRL_PROGRESS")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120, env=env,
                          **kw)


def test_version():
    from importlib.metadata import version

    proc = _run(["-m", "llmrl.cli", "--version"])
    assert proc.returncode == 0 and proc.stdout.strip() == f"llmrl {version('llmrl')}"


def test_help_is_not_squeezed_into_80_columns_when_piped():
    proc = _run(["-m", "llmrl.cli", "eval", "mbpp", "--help"])
    assert proc.returncode == 0
    # at 80 columns rich wraps this option's help over four lines
    assert "HF model name, local path or tiny://NAME to" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) > 100


def test_progress_bar_does_not_flood_a_log_file():
    # 400 updates over ~2 s into a pipe: plain tqdm refreshes every 0.1 s (about 20 lines)
    script = ("import time\nfrom llmrl.progress import progress\n"
              "for _ in progress(range(400), desc='steps'):\n    time.sleep(0.005)\n")
    proc = _run(["-c", script])
    assert proc.returncode == 0, proc.stderr
    refreshes = proc.stderr.count("\r") + proc.stderr.count("\n")
    assert refreshes <= 4, proc.stderr
    assert "400/400" in proc.stderr  # the final state is still logged


def test_progress_can_be_switched_off_by_env():
    script = "from llmrl.progress import progress\nfor _ in progress(range(10), desc='x'):\n    pass\n"
    env = {**os.environ, "LLMRL_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env=env)
    assert proc.returncode == 0 and proc.stderr == ""
