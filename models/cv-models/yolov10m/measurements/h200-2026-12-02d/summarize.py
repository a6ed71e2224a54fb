"""Print the README tables of this folder from its JSON files: python summarize.py [FOLDER].

Two leases: G/H (code ab22244: loader processes added, loader tasks of window // workers images, i.e. one
image per task below batch 32) and I (code e0571e3: at least 4 images per loader task at every batch size).
Variant names are shortened; every variant runs CUDA-graph ORT IO-binding lanes with GPU letterbox and GPU
post-processing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

d = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
P = "ort-cuda-iobinding-gpu-letterbox-gpu-post"
SHORT = {
    P: "loader threads, serial (the default)",
    f"{P}-procs": "loader processes, serial",
    f"{P}-overlap": "loader threads, lanes overlap",
    f"{P}-overlap-procs": "loader processes, lanes overlap",
}


def rows(path: str, lease: str, targets: dict[int, float]) -> None:
    rep = json.loads((d / path).read_text())
    items = rep.items() if "rows" not in rep else [(Path(rep["model"]).stem, rep)]
    for model, r in items:
        switch = r.get("switch_interval_ms")
        for row in r["rows"]:
            b, ceil = row["batch_size"], row["ceiling"]["images_per_s"]
            for v, res in row["ours"].items():
                ratio = res["images_per_s"] / ceil
                t = targets.get(b)
                ok = "-" if t is None else f"{t} {'met' if ratio >= t else 'missed'}"
                gpu = (res.get("gpu") or {}).get("gpu_util_mean")
                name = SHORT.get(v, v) + (f", switch interval {switch:g} ms" if switch else "")
                print(
                    f"| {lease} | {model} | {b} | {ceil:.0f} | {name} | {res['images_per_s']:.0f} | {ratio:.2f} | "
                    f"{ok} | {row['ap'].get(v, float('nan')):.4f} | {gpu:.0f} |"
                )
            for v, err in row.get("failed", {}).items():
                print(f"| {lease} | {model} | {b} | {ceil:.0f} | {SHORT.get(v, v)} | FAILED: {err[:90]} | | | | |")


def table(title: str, parts: list[tuple[str, str, dict[int, float]]]) -> None:
    print(f"\n### {title}\n")
    print("| lease | model | batch | ceiling img/s | variant | img/s | x ceiling | target | AP | GPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path, lease, targets in parts:
        if (d / path).is_file():
            rows(path, lease, targets)


def latency() -> None:
    print("\n### Latency, yolov10m-synth-dfl144, valA (300 images), eval-onnx, batch 1\n")
    print(
        "| lease | flags | latency median ms | mean ms | mean / median | lone batch GPU median ms | median / lone | "
        "img/s | loaders |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for f, lease, flags in (
        ("latency_h_default.json", "H", "(none)"),
        ("latency_h_iobinding.json", "H", "--io-binding"),
        ("latency_h_iobinding-procs.json", "H", "--io-binding --loaders processes"),
        ("latency_i_default.json", "I", "(none)"),
        ("latency_i_iobinding.json", "I", "--io-binding"),
    ):
        m = json.loads((d / f).read_text())
        t, lat = m["timings"], m["latency"]
        lone = (t.get("latency_pass") or {}).get("gpu")
        start = t.get("loaders_start_seconds") or 0
        lone_ms = f"{lone['median_ms']:.2f}" if lone else "-"
        ratio = f"{lat['median_ms'] / lone['median_ms']:.3f}" if lone else "-"
        print(
            f"| {lease} | {flags} | {lat['median_ms']:.2f} | {lat['mean_ms']:.2f} | "
            f"{lat['mean_ms'] / lat['median_ms']:.3f} | {lone_ms} | {ratio} | "
            f"{t['end_to_end_images_per_s']:.0f} | {t['loaders']}{f' (ready in {start:.2f} s)' if start else ''} |"
        )


def replay() -> None:
    rep = json.loads((d / "replay_h.json").read_text())
    print("\n### Pipeline capacity (replay: zero-cost model), yolov10m-synth-dfl144, lease H\n")
    print("| batch | mode | img/s | stage ms pre / inf / post |\n|---|---|---|---|")
    for row in rep["replay"]:
        for mode, r in row["modes"].items():
            s = r["stage_ms"]
            print(
                f"| {row['batch_size']} | {mode} | {r['images_per_s']:.0f} | {s['preprocess']['median']:.2f} / "
                f"{s['inference']['median']:.2f} / {s['postprocess']['median']:.2f} |"
            )


if __name__ == "__main__":
    latency()
    table(
        "Lease I (final code): dynbatch curve and batch 1, ORT CUDA",
        [("curve_i.json", "I", {8: 0.8, 32: 0.8}), ("batch1_i.json", "I", {1: 0.9})],
    )
    table(
        "Lease G/H (loader tasks of one image below batch 32)",
        [
            ("curve_g.json", "G", {8: 0.8, 32: 0.8}),
            ("batch1_h.json", "H", {1: 0.9}),
            ("curve_h_switch1.json", "H", {8: 0.8, 32: 0.8}),
        ],
    )
    replay()
