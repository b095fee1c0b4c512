"""bench/dp_utility.py end to end on a very small configuration: one JSON per finished run, a
second call with --reuse re-runs only what is missing (a crash loses nothing finished), and the
summary pairs sac with fixed by seed. Slow: Opacus' get_noise_multiplier and the SAC runs' budget
filter (bisection over fresh RDP orders) take minutes of CPU under the shared machine's load."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("opacus")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import dp_utility  # noqa: E402

TINY = ["--epsilons", "8", "--seeds", "0", "1", "--controllers", "fixed", "sac", "--steps", "2", "--interval", "1",
        "--rows", "32", "--batch-size", "8", "--eval-rows", "8", "--max-length", "32", "--hidden-size", "16",
        "--num-layers", "1", "--canaries", "1", "--canary-repeats", "2", "--exposure-candidates", "5"]


@pytest.mark.slow
def test_bench_writes_one_json_per_run_and_reuse_reruns_only_the_missing(tmp_path):
    out = tmp_path / "b"
    first = dp_utility.main(TINY + ["--out", str(out)])
    names = sorted(p.name for p in out.glob("*.json"))
    assert names == ["fixed_eps8_seed0.json", "fixed_eps8_seed1.json", "nonprivate_seed0.json",
                     "nonprivate_seed1.json", "sac_eps8_seed0.json", "sac_eps8_seed1.json"]
    assert first["runs"] == 6 and first["failed"] == []
    for key in ("fixed@eps8", "sac@eps8"):
        row = first["by_config"][key]
        assert row["seeds"] == [0, 1] and all(0 < e <= 8.0 for e in row["epsilon"])
        assert row["val_ppl_iqm"]["ci_low"] <= row["val_ppl_iqm"]["iqm"] <= row["val_ppl_iqm"]["ci_high"]
    pair = first["sac_vs_fixed"]["eps8"]
    sac, fixed = first["by_config"]["sac@eps8"]["val_ppl"], first["by_config"]["fixed@eps8"]["val_ppl"]
    assert pair["sac_minus_fixed_ppl_pct"] == [round(100 * (s - f) / f, 3) for s, f in zip(sac, fixed)]

    # a "crash" lost one run: --reuse reruns it alone and reads the other five untouched
    (out / "sac_eps8_seed1.json").unlink()
    kept = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.glob("*.json")}
    again = dp_utility.main(TINY + ["--out", str(out), "--reuse"])
    assert {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.glob("*.json") if p.name in kept} == kept
    assert (out / "sac_eps8_seed1.json").exists() and again["runs"] == 6
    rerun = json.loads((out / "sac_eps8_seed1.json").read_text())
    assert rerun["val_ppl"] == pytest.approx(sac[1], rel=1e-6)  # same seed, same run: reproducible
    assert again["sac_vs_fixed"]["eps8"]["sac_minus_fixed_ppl_pct"] == pair["sac_minus_fixed_ppl_pct"]
