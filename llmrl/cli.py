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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
