"""Collect the latency runs of run_a.sh: python collect_latency.py WORK_DIR OUT_JSON.

Reads WORK_DIR/{default,iobinding,iobinding-overlap}/metrics.json, writes their latency blocks, timings,
metrics and run facts to OUT_JSON and prints the issue-14 ratios: the default run's latency.mean_ms vs
latency.median_ms, and each --io-binding run's latency.median_ms vs the CUDA-event GPU median of its own
--latency-runs pass (one lane, one batch at a time, nothing else in flight).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

work, out_path = Path(sys.argv[1]), Path(sys.argv[2])
out: dict = {}
for key in ("default", "iobinding", "iobinding-overlap"):
    p = work / key / "metrics.json"
    if p.is_file():
        m = json.loads(p.read_text())
        out[key] = {k: m.get(k) for k in ("latency", "timings", "metrics", "warmup_runs", "args")}
        out[key]["backend"] = m.get("run", {}).get("backend")
for key, row in out.items():
    lat, t = row["latency"], row["timings"]
    line = (
        f"{key}: latency.mean_ms {lat['mean_ms']:.2f} median_ms {lat['median_ms']:.2f} p99_ms {lat['p99_ms']:.2f} "
        f"(mean/median {lat['mean_ms'] / lat['median_ms']:.3f}); e2e {t['end_to_end_images_per_s']:.1f} img/s; "
        f"{t.get('latency_timing')}"
    )
    lp = t.get("latency_pass")
    if lp and lp.get("gpu"):
        g = lp["gpu"]["median_ms"]
        line += f"; latency pass GPU median {g:.2f} ms -> latency.median_ms / lone batch = {lat['median_ms'] / g:.3f}"
    print(line)
out_path.write_text(json.dumps(out, indent=1))
