"""`llmrl` command line. Heavy imports (torch, transformers) happen inside commands so that
`llmrl --help` and `llmrl sandbox ...` start fast."""
from __future__ import annotations

import typer

from llmrl.eval.cli import app as eval_app
from llmrl.sandbox.cli import app as sandbox_app
from llmrl.trainer.cli import register as register_trainer_commands
from llmrl.algorithms.thr_cli import app as thr_app

app = typer.Typer(
    name="llmrl",
    help="Reinforcement fine-tuning of language models with verifiable rewards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
register_trainer_commands(app)  # train, demo
app.add_typer(eval_app, name="eval", help="Evaluate models or sample files on MBPP / APPS / HumanEval.")
app.add_typer(sandbox_app, name="sandbox", help="Run, serve and check the code sandbox.")
app.add_typer(thr_app, name="thr", help="Token Hidden Reward tools (inspect).")
app.add_typer(__import__("llmrl.research.cli", fromlist=["index_app"]).index_app, name="index",
              help="Build the local search index of a corpus (research agents).")
app.add_typer(__import__("llmrl.research.cli", fromlist=["search_app"]).search_app, name="search",
              help="Serve a local search index over HTTP (Search-R1's /retrieve API).")
eval_app.command("research")(__import__("llmrl.research.cli", fromlist=["research"]).research)  # F1/EM + tool stats
app.command("compare")(__import__("llmrl.eval.compare_cli", fromlist=["compare"]).compare)  # runs across seeds: IQM, CIs, AdaStop
app.add_typer(__import__("llmrl.rewards.translation.cli", fromlist=["exemplars_app"]).exemplars_app, name="exemplars",
              help="Build exemplar translations ahead of training (ExTrans).")
eval_app.command("translation")(__import__("llmrl.rewards.translation.cli", fromlist=["translation"]).translation)  # BLEU/chrF per direction


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"llmrl {version('llmrl')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("llmrl (not installed)")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                            help="Print the llmrl version and exit.")) -> None:
    """Reinforcement fine-tuning of language models with verifiable rewards."""


def _help_width() -> None:
    """Help piped to a file or pager is laid out at 120 columns, not squeezed into rich's
    default 80 (a terminal keeps its own width; $TERMINAL_WIDTH / $COLUMNS still win)."""
    import os
    import sys

    from typer import rich_utils

    if rich_utils.MAX_WIDTH is None and not os.environ.get("COLUMNS") and not sys.stdout.isatty():
        rich_utils.MAX_WIDTH = 120


def main() -> None:
    _help_width()
    app()


if __name__ == "__main__":
    main()
