"""10,000-job soak of the HTTP service (slow; run with `pytest -m slow`). Same code as
bench/sandbox_soak.py, which prints the JSON figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "sandbox_soak.py"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_http_service_survives_10k_mixed_jobs():
    p = subprocess.run([sys.executable, str(BENCH), "--jobs", "10000", "--clients", "8"],
                       capture_output=True, text=True, timeout=3500)
    out = json.loads(p.stdout)
    assert out["ok"], out
    assert out["jobs"] == 10000 and out["server_alive"]
    assert out["leaked_processes"] <= 0 and out["leaked_fds"] <= 0
    assert out["rss_growth_mb"] <= out["rss_bound_mb"]
