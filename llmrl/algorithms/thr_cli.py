"""`llmrl thr ...`: Token Hidden Reward tools. Heavy imports happen inside the commands."""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.callback()
def _thr() -> None:
    """Token Hidden Reward tools."""


@app.command()
def inspect(
    samples: Path = typer.Option(..., "--samples", help="THR inspect jsonl the trainer wrote (one group per line)."),
    out: Path = typer.Option(Path("thr.html"), "--out", help="HTML file to write."),
    max_groups: int = typer.Option(20, "--max-groups", min=1, help="Show at most this many groups (file order)."),
    step: int | None = typer.Option(None, "--step", help="Only groups recorded at this trainer step."),
) -> None:
    """Color each completion token by its THR (green helps, red hurts the correct responses) into one HTML page."""
    from llmrl.algorithms.thr_html import read_thr_inspect_jsonl, render_thr_html

    if not samples.is_file():
        typer.secho(f"--samples {samples}: no such file. Point it at the thr inspect jsonl in the run's output "
                    f"folder (written when THR is on).", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    try:
        groups = read_thr_inspect_jsonl(samples)
    except ValueError as e:
        typer.secho(str(e), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from e
    if step is not None:
        groups = [g for g in groups if g.get("step") == step]
        if not groups:
            typer.secho(f"{samples} has no groups recorded at step {step}.", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
    groups = groups[:max_groups]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_thr_html(groups, title=f"THR inspect: {samples.name}"), encoding="utf-8")
    typer.echo(f"wrote {out} ({len(groups)} groups)")
