"""`llmrl train` and `llmrl demo`.

Exit codes: 2 for configuration problems (recipe keys, names that do not resolve, missing data
or model, a resume that does not fit its checkpoint), 1 for failures during training (diverged,
degenerate signal, a failed trainer.push_to_hub, an internal error), 130 after Ctrl-C / SIGTERM (a checkpoint was written).
No traceback unless ``--debug``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from llmrl.paths import REPO_ROOT

DEMO_RECIPE = REPO_ROOT / "recipes" / "tiny" / "math_grpo.yaml"


def _fail(message: str, code: int) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def run_recipe(recipe: Path, overrides: list[str], resume: bool, *, debug: bool = False) -> dict:
    from llmrl.config.load import RecipeError, load_recipe

    try:
        cfg = load_recipe(recipe, overrides)
    except RecipeError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _fail(f"error: {exc}", 2)
    from llmrl.trainer.loop import DegenerateSignal, TrainingDiverged, train

    from llmrl.trainer.reporting import summary_table

    if cfg.task == "sft":
        from llmrl.sft.train import train_sft as train
    try:
        summary = train(cfg, resume=resume)
        if "rank" not in summary:  # several processes: rank 0 reports for all
            if cfg.task == "sft":
                from llmrl.sft.train import headline

                typer.echo(summary_table(headline(summary)))
            else:
                typer.echo(summary_table(summary))
        return summary
    except KeyboardInterrupt as exc:
        _fail(f"interrupted: {exc}" if str(exc) else "interrupted (no checkpoint written for the current step)", 130)
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        from llmrl.trainer.checkpoint import CheckpointWriteError
        from llmrl.trainer.hub import PushToHubError

        from llmrl.privacy.errors import BudgetExhausted

        if isinstance(exc, (TrainingDiverged, DegenerateSignal, CheckpointWriteError, PushToHubError, BudgetExhausted)):
            _fail(f"error: {exc}", 1)
        if isinstance(exc, (ValueError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)):
            # configuration that only shows at setup (missing model or data file, dataset column, ...)
            _fail(f"error: {exc}", 2)
        _fail(f"internal error: {type(exc).__name__}: {exc}\n(rerun with --debug for the traceback)", 1)
    raise AssertionError("unreachable")


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/ and docs/recipes.md)."),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key: --set trainer.lr=1e-4 (repeatable)."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in trainer.output_dir."),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    ) -> None:
        """Train a policy with RL from a recipe."""
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        run_recipe(recipe, set_ or [], resume, debug=debug)

    @app.command()
    def demo(
        output_dir: str = typer.Option("runs/demo", help="Where the demo run writes its files."),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe key."),
        overwrite: bool = typer.Option(False, "--overwrite",
                                       help="Replace an earlier run in --output-dir (only a llmrl run folder)."),
    ) -> None:
        """Build the tiny model, warm-start it on arithmetic, run GRPO, print accuracy before and after."""
        import shutil

        from llmrl.config.load import RecipeError, load_recipe

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        overrides = [f"trainer.output_dir={output_dir}", *(set_ or [])]
        replace = _demo_dir_to_replace(Path(output_dir), overwrite=overwrite)
        try:  # a bad --set must not cost the user the folder it would have replaced
            load_recipe(DEMO_RECIPE, overrides)
        except RecipeError as exc:
            _fail(f"error: {exc}", 2)
        if replace:
            shutil.rmtree(output_dir)
        summary = run_recipe(DEMO_RECIPE, overrides, resume=False)
        if "eval/accuracy_after" not in summary:  # data.eval_size: 0
            typer.echo(f"\nNo held-out evaluation (data.eval_size is 0). Curves: {output_dir}/curves.png")
            return
        before, after = summary["eval/accuracy_before"], summary["eval/accuracy_after"]
        typer.echo(
            f"\nHeld-out greedy accuracy: {before:.1%} before GRPO -> {after:.1%} after "
            f"({100 * (after - before):+.1f} points). Curves: {output_dir}/curves.png"
        )


def _demo_dir_to_replace(out: Path, *, overwrite: bool) -> bool:
    """Whether ``out`` holds an earlier run to delete before the demo; exits 2 rather than ever
    deleting a user's files by surprise.

    A missing or empty folder is used as is. A non-empty one is replaced only with ``--overwrite``
    and only if it is a llmrl run folder (it has the ``recipe.yaml`` every run writes) and not the
    current folder or one above it."""
    if not out.exists():
        return False
    if not out.is_dir():
        _fail(f"error: --output-dir {out} is a file, not a folder; choose another --output-dir", 2)
    if not any(out.iterdir()):
        return False
    if not overwrite:
        _fail(f"error: --output-dir {out} already exists and is not empty; pass --overwrite to replace an "
              f"earlier run there, or choose another --output-dir", 2)
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or not (out / "recipe.yaml").is_file():
        _fail(f"error: --output-dir {out} is not a llmrl run folder (no recipe.yaml, or it holds the current "
              f"folder); refusing to delete it even with --overwrite. Choose a new or empty --output-dir", 2)
    return True
