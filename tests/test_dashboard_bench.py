"""``fer-edge bench dashboard`` on a small fleet: real mosquitto, real dashboard processes, SQLite and PostgreSQL."""

from __future__ import annotations

import json

from bench.dashboard import format_dashboard
from tests.daemon_run import run_cli


def test_bench_dashboard_small_fleet(tmp_path, pg_server):
    out = tmp_path / "out"
    proc = run_cli("bench", "dashboard", "--devices", "20", "--duration", "4", "--workers", "1,2", "--no-browser",
                   "--history-days", "0.05", "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "dashboard.json").read_text())
    assert [(c["backend"], c["workers"]) for c in result["cases"]] == [
        ("sqlite", 1), ("sqlite", 2), ("postgresql", 1), ("postgresql", 2)]
    for c in result["cases"]:
        assert c["lost"] == 0 and c["stored"] > 20 and c["api_devices_listed"] == 20
        assert 0 <= c["lag_p50_ms"] <= c["lag_p95_ms"] <= c["lag_max_ms"] < 10000
        assert c["db_mb_per_device_day"] > 0
    # storage tiers: 72 simulated minutes per database, every raw row pruned at the end, rollups kept
    assert [h["backend"] for h in result["history"]] == ["sqlite", "postgresql"]
    for h in result["history"]:
        assert 0.9 <= h["msgs_per_device_s"] <= 1.2 and h["messages"] > 3000 and h["raw_rows_left"] == 0
        assert 1440 <= h["minute_rows_per_device_day"] <= 1480  # one row per minute (72 or 73 minutes)
        # kept: 72 minute rows are within PostgreSQL's page noise here (the 30-day bench measures it)
        assert h["raw_mb_per_device_day"] > 10 * abs(h["kept_mb_per_device_day"])
        assert h["upgrade_rollups_equal"] is True and h["upgrade_s_per_device_day"] > 0
        assert h["classroom_tier"] == "raw" and h["classroom_points"] > 100 and h["classroom_ms_median"] > 0
    table = (out / "dashboard.md").read_text()
    assert table == format_dashboard(result) and "lag p95 ms" in table and table.splitlines()[0] in proc.stdout
    assert "kept MB / device-day after the raw window" in table
