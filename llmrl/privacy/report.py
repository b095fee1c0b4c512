"""The run report's picture: the noise and clipping the run actually used, and epsilon spent."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_trajectory(summary: dict[str, Any], path: Path) -> Path:
    """sigma_eff and per-group clips over steps, plus epsilon spent and validation perplexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = summary["privacy"]
    traj = p["trajectory"]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
    steps = [t["step"] for t in traj]
    ax[0].step(steps, [t["sigma_eff"] for t in traj], where="post")
    ax[0].set(title="noise multiplier sigma_eff", xlabel="step")
    for g in range(len(traj[0]["clips"]) if traj else 0):
        ax[1].step(steps, [t["clips"][g] for t in traj], where="post", lw=0.8)
    ax[1].set(title="clip C_g per group", xlabel="step", yscale="log")
    curve = summary["curve"]
    ax[2].plot([c["step"] for c in curve], [c.get("epsilon", 0.0) for c in curve], label="epsilon spent")
    ax[2].axhline(p["target_epsilon"], ls="--", c="k", lw=0.8, label="target")
    ax[2].set(title=f"{p['controller']}: epsilon (RDP), delta={p['delta']:g}", xlabel="step")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
