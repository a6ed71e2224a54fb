"""The benchmark's table: per batch size, the ceiling's configurations, every variant against the honest
ceiling and Ultralytics, the sequential path, and the verdict line of the first (recommended) variant."""

from __future__ import annotations

from typing import Any

from common.throughput.bench.batch import VAL2017_IMAGES
from common.throughput.bench.runs import STAGES

__all__ = ["format_table"]


def _fmt_line(batch: int, name: str, d: dict[str, Any], ceil: float, ultra: float | None) -> str:
    ips = d["images_per_s"]
    gpu = (d.get("gpu") or {}).get("gpu_util_mean")
    st = d.get("stage_ms")
    stages = "/".join(f"{st[k]['median']:.2f}" for k in STAGES) if st else "-"
    x_ultra = f"{ips / ultra:.2f}" if ultra else "-"
    gpu_s = f"{gpu:.0f}" if gpu is not None else "-"
    return f"{batch:>5}  {name:<38}{ips:>9.1f}{ips / ceil:>11.2f}{x_ultra:>9}  {gpu_s:>6}  {stages}"


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'batch':>5}  {'variant':<38}{'img/s':>9}{'x ceiling':>11}{'x ultra':>9}  {'GPU %':>6}  stage ms pre/inf/post"
    )
    lines = [head]
    for r in rows:
        b, ceil = r["batch_size"], r["ceiling"]["images_per_s"]
        ultra = r.get("ultralytics", {}).get("images_per_s")
        lines.extend(ceiling_lines(b, r["ceiling"], ultra))
        for name, d in r["ours"].items():
            ap = r.get("ap", {}).get(name)
            same = {True: " =seq", False: " !=seq"}.get(r.get("identical", {}).get(name), "")
            tail = f"  AP {ap:.4f}{same}" if ap is not None else ""
            rounds = d.get("rounds_images_per_s") or []
            if len(rounds) > 1:  # the median round is shown; every round's figure beside it
                tail += "  rounds " + "/".join(f"{x:.0f}" for x in rounds)
            lines.append(_fmt_line(b, f"(b) {name}", d, ceil, ultra) + tail)
        if r["sequential"]:
            lines.append(_fmt_line(b, "    sequential", r["sequential"], ceil, ultra))
        if ultra:
            lines.append(_fmt_line(b, "(c) ultralytics predict", r["ultralytics"], ceil, ultra))
        elif "ultralytics" in r:
            lines.append(f"{b:>5}  (c) ultralytics: {r['ultralytics'].get('skipped')}")
        for name, err in r.get("failed", {}).items():
            lines.append(f"{b:>5}  (b) {name}: FAILED {err}")
        lines.append(_verdict(r))
    return "\n".join(lines)


def ceiling_lines(batch: int, c: dict[str, Any], ultra: float | None) -> list[str]:
    """The ceiling's configurations, the honest one (the best) marked and the x ceiling column against it."""
    ceil, best = c["images_per_s"], c.get("best", "serial")
    overlap = c.get("overlap")
    by_lanes = c.get("overlap_by_lanes") or ({str(overlap["lanes"]): overlap} if overlap else {})
    parts = [("serial", c.get("serial") or c, best == "serial")]
    for n, d in by_lanes.items():
        label = "overlapped" if len(by_lanes) == 1 else f"overlapped, {n} lanes"
        parts.append((label, d, best == "overlap" and d["images_per_s"] == overlap["images_per_s"]))
    return [
        _fmt_line(batch, f"(a) ceiling, {label}" + (" = ceiling" if marked else ""), d, ceil, ultra)
        for label, d, marked in parts
    ]


def _verdict(r: dict[str, Any]) -> str:
    """The first (recommended) variant against the sequential reference, the honest ceiling and the best."""
    same = "identical" if r["stats_identical"] else "DIFFERENT"
    dets = r.get("detections_identical", {}).get(r["backend"])
    line = f"{'':>5}  AP {r['backend']} {r['ap_ours']:.4f} vs sequential {r['ap_sequential']:.4f}: {same}"
    if dets is not None:
        line += f", detections {'identical' if dets else 'DIFFERENT'}"
    if "main_ratio_to_ceiling" in r:
        line += (
            f"; {r['main_ratio_to_ceiling']:.2f}x the ceiling ({r['ceiling'].get('best', 'serial')}), "
            f"{r['main_ratio_to_best']:.2f}x the best variant ({r['best_variant']})"
        )
    val = r.get("seconds_for_val2017") or {}
    if r["backend"] in val:
        fastest = min(val, key=val.__getitem__)
        line += (
            f"\n{'':>5}  start-up + {VAL2017_IMAGES} images: {val[r['backend']]:.1f} s "
            f"(start {r['ours'][r['backend']]['start_seconds']:.1f} s); soonest {fastest} {val[fastest]:.1f} s"
        )
        if r.get("kernel_compile_seconds") is not None:
            line += f"; each + {r['kernel_compile_seconds']:.1f} s compiling the post-processing kernels, once"
    return line
