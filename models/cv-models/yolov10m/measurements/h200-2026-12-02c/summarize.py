"""Print the README tables of this folder from its JSON files: python summarize.py [FOLDER].

Three leases: A/B (code be53f73: CUDA graphs only with --cuda-graph; bench variant names of that commit),
C/D/E (code 82d47a1: graph lanes by default, a lane could still hop threads) and F (code 9deb32a: the final
lanes, one thread each). Variant names are shortened: "graph" = CUDA-graph lanes, "per-kernel" = without.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

d = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
SHORT = {  # (lease, variant) -> what ran
    ("ab", "ort-cuda-iobinding-gpu-letterbox-gpu-post"): "per-kernel, overlap below 16 / serial (auto)",
    ("ab", "ort-cuda-iobinding-graph-gpu-letterbox-gpu-post"): "graph, serial (auto)",
    ("ab", "ort-cuda-iobinding-gpu-decode-gpu-letterbox-gpu-post"): "per-kernel, --decode gpu",
    ("ab", "ort-cuda-iobinding-graph-gpu-decode-gpu-letterbox-gpu-post"): "graph, --decode gpu",
    ("cdf", "ort-cuda-iobinding-gpu-letterbox-gpu-post"): "graph, serial (the default)",
    ("cdf", "ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap"): "graph, overlap",
    ("cdf", "ort-cuda-iobinding-nograph-gpu-letterbox-gpu-post"): "per-kernel, overlap below 16 / serial (auto)",
    ("cdf", "ort-cuda-iobinding-gpu-decode-gpu-letterbox-gpu-post"): "graph, --decode gpu",
}


def rows(path: str, lease: str, targets: dict[int, float]) -> None:
    rep = json.loads((d / path).read_text())
    items = rep.items() if "rows" not in rep else [(Path(rep["model"]).stem, rep)]
    for model, r in items:
        for row in r["rows"]:
            b, ceil = row["batch_size"], row["ceiling"]["images_per_s"]
            for v, res in row["ours"].items():
                ratio = res["images_per_s"] / ceil
                t = targets.get(b)
                ok = "-" if t is None else f"{t} {'met' if ratio >= t else 'missed'}"
                gpu = (res.get("gpu") or {}).get("gpu_util_mean")
                print(
                    f"| {model} | {b} | {ceil:.0f} | {SHORT.get((lease, v), v)} | {res['images_per_s']:.0f} | "
                    f"{ratio:.2f} | {ok} | {row['ap'].get(v, float('nan')):.4f} | {gpu:.0f} |"
                )
            for v, err in row.get("failed", {}).items():
                why = re.search(r"CUDA failure \d+: [^;]*", err)
                print(
                    f"| {model} | {b} | {ceil:.0f} | {SHORT.get((lease, v), v)} | FAILED: "
                    f"{why.group(0) if why else err[:90]} | | | | |"
                )


def table(title: str, parts: list[tuple[str, str, dict[int, float]]]) -> None:
    print(f"\n### {title}\n")
    print("| model | batch | ceiling img/s | variant | img/s | x ceiling | target | AP | GPU % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path, lease, targets in parts:
        if (d / path).is_file():
            rows(path, lease, targets)


def latency() -> None:
    print("\n### Latency, yolov10m-synth-dfl144, valA (300 images), eval-onnx, batch 1\n")
    print("| lease | flags | latency median ms | mean ms | lone batch GPU median ms | median / lone | img/s | lanes |")
    print("|---|---|---|---|---|---|---|---|")
    for f, lease, names in (
        (
            "latency.json",
            "A",
            {
                "iobinding": "--io-binding",
                "graph": "--io-binding --cuda-graph",
                "decode": "--io-binding --preprocess gpu-letterbox --decode gpu",
                "graph-decode": "--io-binding --cuda-graph ... --decode gpu",
            },
        ),
        (
            "latency_c.json",
            "C",
            {"default": "(none)", "iobinding": "--io-binding", "nograph": "--io-binding, enable_cuda_graph=0"},
        ),
    ):
        for k, v in json.loads((d / f).read_text()).items():
            lone = v.get("lone_gpu")
            ratio = v.get("ratio") or v.get("ratio_to_lone")
            order = (v.get("gpu_order") or "-").split(" ")[0]
            graph = "graph" if v.get("cuda_graph") else ("per-kernel" if v.get("cuda_graph") is False else "-")
            print(
                f"| {lease} | {names[k]} | {v['latency']['median_ms']:.2f} | {v['latency']['mean_ms']:.2f} | "
                f"{lone['median_ms']:.2f} | {ratio:.3f} | {v['end_to_end_images_per_s']:.0f} | {graph}, {order} |"
                if lone
                else f"| {lease} | {names[k]} | {v['latency']['median_ms']:.2f} | {v['latency']['mean_ms']:.2f} | - | "
                f"mean/median {v['mean_over_median']:.3f} | {v['end_to_end_images_per_s']:.0f} | plain session |"
            )
    v = json.loads((d / "latency_f.json").read_text())
    print(
        f"| F | --io-binding | {v['latency']['median_ms']:.2f} | {v['latency']['mean_ms']:.2f} | "
        f"{v['lone_gpu']['median_ms']:.2f} | {v['ratio_to_lone']:.3f} | {v['end_to_end_images_per_s']:.0f} | "
        f"graph, {v['gpu_order'].split(' ')[0]} |"
    )


def decode() -> None:
    rep = json.loads((d / "decode.json").read_text())["decode"]
    print("\n### Decoding alone (valA, 300 JPEGs in memory, repeated >= 3 s)\n")
    print("| decoder | img/s |\n|---|---|")
    print(f"| OpenCV imdecode, {rep['opencv']['workers']} threads | {rep['opencv']['images_per_s']:.0f} |")
    for b, r in rep["nvimgcodec"].items():
        print(f"| nvImageCodec (GPU), batch {b}, one decoder | {r['images_per_s']:.0f} |")
    for key in ("pixels", "pixels_default_options"):
        px = rep[key]
        print(
            f"\nPixels vs OpenCV, options {px['options']!r}: max {px['max_abs_diff']} grey level(s), "
            f"{px['share_differing']:.4%} of samples differ; images by largest difference {px['images_by_max_diff']}"
        )


if __name__ == "__main__":
    latency()
    decode()
    table(
        "Lease F (final code): dynbatch curve and batch 1, ORT CUDA",
        [("curve_f.json", "cdf", {8: 0.8, 32: 0.8}), ("batch1_f.json", "cdf", {1: 0.9})],
    )
    table(
        "Lease C/D (graph lanes could hop threads): dynbatch curve and batch 1",
        [("curve_d.json", "cdf", {8: 0.8, 32: 0.8}), ("curve_e.json", "cdf", {}), ("batch1_d.json", "cdf", {1: 0.9})],
    )
    table(
        "Lease A/B (graph lanes only with --cuda-graph; per-kernel ceiling)",
        [("curve.json", "ab", {8: 0.8, 32: 0.8}), ("batch1.json", "ab", {1: 0.9})],
    )
