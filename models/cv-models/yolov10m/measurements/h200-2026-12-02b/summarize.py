"""Print the README tables of this folder from its JSON files: python summarize.py [FOLDER].

In the run (code 3652825) the bench variant ``...-gpu-post`` had the serial GPU order (the default then);
``...-gpu-post-overlap`` had overlapping lanes. ``--gpu-order auto`` (the default since) picks overlap for
ONNX Runtime --io-binding below batch 16 and serial from 16 on: the rows marked "auto" below.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

d = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
SERIAL, OVERLAP = "ort-cuda-iobinding-gpu-letterbox-gpu-post", "ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap"


def name(variant: str, batch: int) -> str:
    if variant == SERIAL:
        return "gpu-letterbox+gpu-post, serial" + (" (auto)" if batch >= 16 else "")
    if variant == OVERLAP:
        return "gpu-letterbox+gpu-post, overlap" + (" (auto)" if batch < 16 else "")
    return variant.replace("ort-cuda-iobinding-", "") + " (CPU post), serial"


def replay() -> None:
    print("| model | batch | mode | img/s | target | AP replay | AP real | stage ms pre/inf/post |")
    print("|---|---|---|---|---|---|---|---|")
    for model, r in json.loads((d / "replay.json").read_text()).items():
        for row in r["replay"]:
            b = row["batch_size"]
            target = 800 if b == 1 else 2000
            for mode, m in row["modes"].items():
                st = "/".join(f"{m['stage_ms'][k]['median']:.2f}" for k in ("preprocess", "inference", "postprocess"))
                ok = "met" if m["images_per_s"] >= target else "missed"
                print(
                    f"| {model} | {b} | {mode} | {m['images_per_s']:.0f} | {target} {ok} | {m['ap']:.4f} | "
                    f"{row['ap_real']:.4f} | {st} |"
                )


def curve(path: str, targets: dict[int, float]) -> None:
    print("| model | batch | ceiling img/s | variant | img/s | x ceiling | target | AP | GPU % |")
    print("|---|---|---|---|---|---|---|---|---|")
    data = json.loads((d / path).read_text())
    runs = data.items() if "rows" not in data else [(Path(data["model"]).stem, data)]
    for model, r in runs:
        for row in r["rows"]:
            b, ceil = row["batch_size"], row["ceiling"]["images_per_s"]
            for variant, m in row["ours"].items():
                if "images_per_s" not in m:
                    continue
                x = m["images_per_s"] / ceil
                t = targets.get(b)
                tgt = f"{t} {'met' if x >= t else 'missed'}" if t else "-"
                ap = row["ap"].get(variant)
                gpu = (m.get("gpu") or {}).get("gpu_util_mean")
                print(
                    f"| {Path(model).stem} | {b} | {ceil:.0f} | {name(variant, b)} | {m['images_per_s']:.0f} | "
                    f"{x:.2f} | {tgt} | {ap:.4f} | {gpu:.0f} |"
                )
    ttm = data.get("time_to_metrics") if "rows" in data else None
    if ttm:
        setup = ttm["seconds"] - ttm["pipeline_seconds"] - ttm["coco_eval_seconds"]
        print(
            f"\nTime to metrics, {ttm['images']} images ({ttm['distinct_images']} distinct under fresh ids), "
            f"batch {ttm['batch_size']}, serial lanes: {ttm['seconds']:.1f} s ({ttm['images_per_s']:.0f} img/s) = "
            f"set-up {setup:.1f} s (kernel compilation, warm-up runs per lane and shape) + pipeline "
            f"{ttm['pipeline_seconds']:.1f} s + COCOeval ({ttm['coco_engine']}: faster-coco-eval) "
            f"{ttm['coco_eval_seconds']:.1f} s ({100 * ttm['coco_eval_share']:.0f}%); AP {ttm['AP']:.4f}"
        )


def latency() -> None:
    for key, row in json.loads((d / "latency.json").read_text()).items():
        lat, t = row["latency"], row["timings"]
        line = (
            f"- {key}: latency.mean_ms {lat['mean_ms']:.2f}, median_ms {lat['median_ms']:.2f}, p99_ms "
            f"{lat['p99_ms']:.2f} (mean/median {lat['mean_ms'] / lat['median_ms']:.3f}); end to end "
            f"{t['end_to_end_images_per_s']:.0f} img/s; warm-up {row['warmup_runs']}; AP "
            f"{row['metrics']['mAP_50_95']:.4f}"
        )
        lp = t.get("latency_pass")
        if lp and lp.get("gpu"):
            g = lp["gpu"]["median_ms"]
            line += f"; its --latency-runs 100 pass: GPU median {g:.2f} ms, ratio {lat['median_ms'] / g:.2f}"
        print(line)


if __name__ == "__main__":
    print("### Replay capacity\n")
    replay()
    print("\n### dynbatch batch curve, ORT CUDA\n")
    curve("curve.json", {8: 0.8, 32: 0.8})
    print("\n### Batch 1 end to end vs ceiling\n")
    curve("batch1.json", {1: 0.9})
    print("\n### Latency, yolov10m-synth-dfl144, valA (300 images)\n")
    latency()
