"""What a user sees of a run: metrics.jsonl (+ TensorBoard / W&B), samples.jsonl, a PNG of the
learning curves and a closing summary table."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop records past ``last_step`` (written after the checkpoint a resume starts from), so a
    resumed run's files equal an uninterrupted run's."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", -1) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:  # a line cut by kill -9
            break
    path.write_text("".join(k + "\n" for k in keep))


class RunLogger:
    """Append-only JSONL sinks, plus TensorBoard when installed and W&B when asked for."""

    def __init__(self, output_dir: Path, *, tensorboard: bool | str = "auto", wandb: bool = False,
                 wandb_project: str = "llmrl", config: dict[str, Any] | None = None, resume_step: int | None = None):
        self.output_dir = output_dir
        self.metrics_path = output_dir / "metrics.jsonl"
        self.samples_path = output_dir / "samples.jsonl"
        step_files = (self.metrics_path, self.samples_path, output_dir / "thr_samples.jsonl")
        for p in step_files:
            if resume_step is not None:
                truncate_jsonl(p, resume_step)
            else:
                p.unlink(missing_ok=True)
        self._metrics = open(self.metrics_path, "a")
        self._samples = open(self.samples_path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(output_dir / "tensorboard"))
            except ImportError:
                if tensorboard is True:
                    raise ValueError("logging.tensorboard: true needs tensorboard: pip install 'llmrl[tensorboard]'") from None
        self._wandb = None
        if wandb:
            try:
                import wandb as wb
            except ImportError:
                raise ValueError("logging.wandb: true needs wandb: pip install 'llmrl[wandb]'") from None
            self._wandb = wb.init(project=wandb_project, config=config, dir=str(output_dir), resume="allow")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        record = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def samples(self, step: int, records: list[dict[str, Any]]) -> None:
        for r in records:
            self._samples.write(json.dumps({"step": step, **r}) + "\n")
        self._samples.flush()

    def close(self) -> None:
        self._metrics.close()
        self._samples.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class NullLogger:
    """The logger of ranks other than 0 in multi-process training: only rank 0 writes files."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def samples(self, step: int, records: list[dict[str, Any]]) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, out_png: Path, *, title: str = "") -> Path:
    """Training reward and held-out accuracy against step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    train = [(r["step"], r["reward/mean"]) for r in rows if "reward/mean" in r]
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    if train:
        xs, ys = zip(*train)
        ax.plot(xs, ys, color="tab:blue", alpha=0.35, lw=1, label="train reward (per step)")
        k = max(1, len(ys) // 30)
        smooth = [sum(ys[max(0, i - k):i + 1]) / len(ys[max(0, i - k):i + 1]) for i in range(len(ys))]
        ax.plot(xs, smooth, color="tab:blue", lw=2, label=f"train reward (moving mean, {k + 1} steps)")
    if evals:
        xs, ys = zip(*evals)
        ax.plot(xs, ys, "o-", color="tab:red", lw=2, label="held-out greedy accuracy")
    ax.set_xlabel("RL step")
    ax.set_ylabel("reward / accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or metrics_path.parent.name)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table that reads the same in a terminal and in CI logs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="llmrl run summary", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console = Console(width=100, record=True)
    with console.capture() as cap:
        console.print(table)
    return cap.get()
