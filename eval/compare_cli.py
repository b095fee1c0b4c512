"""``llmrl compare RUN_DIR...``: the command over :mod:`llmrl.eval.compare` and :mod:`llmrl.eval.adastop`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer


def compare(
    run_dirs: List[Path] = typer.Argument(..., help="run folders, or folders holding run folders (one level down)"),
    metric: str = typer.Option("eval/accuracy", "--metric", "-m",
                               help="score of a run: a key of result.json / summary.json, else its last value in "
                                    "metrics.jsonl (e.g. eval/accuracy, greedy, pass@8, pass@1)"),
    group_by: List[str] = typer.Option([], "--group-by", "-g",
                                       help="dotted recipe key(s) defining a configuration, e.g. "
                                            "algorithm.token_weighting.p (default: folder name without seedN)"),
    curve_metric: Optional[str] = typer.Option(None, "--curve-metric",
                                               help="metric of the learning curves (default: --metric if logged per "
                                                    "step, else eval/accuracy)"),
    reps: int = typer.Option(2000, help="bootstrap resamples"),
    gap_threshold: float = typer.Option(1.0, help="optimality gap threshold (1.0 for accuracies and pass rates)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the full report (JSON) here"),
    png: Optional[Path] = typer.Option(None, "--png", help="write the report figure (PNG) here"),
    html: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML report here"),
    percent: bool = typer.Option(False, help="show scores x 100 in the table and figure"),
    adastop: Optional[Path] = typer.Option(None, "--adastop",
                                           help="AdaStop state file (JSON; created if missing): feed these runs into "
                                                "the sequential test and say equal / larger / smaller / run N more"),
    adastop_n: int = typer.Option(5, help="AdaStop: seeds per configuration per interim"),
    adastop_k: int = typer.Option(4, help="AdaStop: maximum interims (budget n*K seeds)"),
    alpha: float = typer.Option(0.05, help="AdaStop: family-wise error level"),
    baseline: Optional[str] = typer.Option(None, help="also report each configuration minus this one, paired by "
                                                      "seed (IQM and CI), e.g. 'p=+0'"),
    seed: int = typer.Option(0, help="bootstrap / permutation RNG seed"),
) -> None:
    """Compare configurations across seeds: mean, median, IQM, optimality gap (95% stratified
    bootstrap CIs), probability of improvement, performance profiles, learning curves; optionally
    the AdaStop sequential test."""
    from llmrl.eval.compare import (compare_scores, group_runs, learning_curves, load_runs, paired_differences,
                                    plot_report,
                                    render_table, score_matrices, write_html)

    try:
        runs = load_runs(run_dirs)
        groups = group_runs(runs, group_by)
        mats, tasks, seeds_of = score_matrices(groups, metric)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    report = {"metric": metric, "tasks": tasks, "runs": {k: [str(r.path) for r in rs] for k, rs in groups.items()},
              "scores": {k: v.tolist() for k, v in mats.items()}}
    report |= compare_scores(mats, reps=reps, gap_threshold=gap_threshold, seed=seed)
    if baseline:
        try:
            report["paired_minus_baseline"] = {"baseline": baseline, **paired_differences(
                mats, seeds_of, baseline, reps=reps, seed=seed)}
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
    cm = curve_metric or (metric if any(metric in r.curves for r in runs) else "eval/accuracy")
    report["curve_metric"] = cm
    report["learning_curves"] = learning_curves(groups, cm, seed=seed)
    if adastop is not None:
        from llmrl.eval.adastop import AdaStop

        try:
            test = AdaStop.load_or_new(adastop, list(mats), n=adastop_n, K=adastop_k, alpha=alpha, seed=seed)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        # one score per seed (mean over tasks), identified by its run folders
        avail = {k: [(f"{k}/seed={s}", float(np.mean(row))) for s, row in zip(seeds_of[k], mats[k])] for k in mats}
        report["adastop"] = test.update(avail)
        test.save(adastop)
    scale = 100.0 if percent else 1.0
    typer.echo(render_table(report, scale=scale, digits=1 if percent else 3))
    if json_out:
        json_out.write_text(json.dumps(report, indent=1))
    if png or html:
        fig = plot_report(report, png or Path(html).with_suffix(".png"), scale=scale)
        if html:
            write_html(report, fig, html)
        typer.echo(f"report: {', '.join(str(p) for p in (png, html) if p)}")

