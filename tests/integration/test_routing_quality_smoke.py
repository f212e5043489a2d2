"""bench/routing_quality.py in its short mode: runs end to end, and cache_aware keeps more cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "routing_quality.py"


def test_short_run_reports_each_system_and_cache_aware_hits_more(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    argv = [sys.executable, str(BENCH), "--short", "--systems", "round_robin,cache_aware", "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["system"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"corral round_robin", "corral cache_aware"}
    for r in rows.values():
        assert r["errors"] == 0 and r["requests"] == 8 * 3
        assert 0 < r["hit_rate"] <= r["ceiling"] <= 1
    assert rows["corral cache_aware"]["hit_rate"] > rows["corral round_robin"]["hit_rate"]
    assert "| base | corral cache_aware |" in done.stdout
