#!/usr/bin/env bash
# Batch 1 on a GPU, as the performance page measures it, side by side in one go:
#   1. bench-eval on the fixtures' valA for each model: the inference-only ceilings (serial, and overlapped on
#      3, 4 and 6 lanes) and the no-flag run against more lanes, each with a thread per lane and with the main
#      thread driving the lanes (--lane-threads main);
#   2. eval-onnx on 5000 images (rep5000, made here by make_repeated_set.py) for each model: no flags, then
#      --lane-threads main on 3, 4 and 6 lanes, the order reversed in a second round;
#   3. a table of the eval-onnx runs (img/s, AP, what ran) in OUT/eval-runs.md and OUT/eval-runs.json.
#
#   F=../shared/fixtures OUT=tmp/bench-batch1 bash scripts/dev/bench-batch1.sh [MODEL ...]
#
# MODEL: fixture model names (default: yolov10n-synth-raw84 yolov10m-synth-dfl144). PYTHON: the interpreter
# (default: python). STEPS: which of bench, eval (default: both; each takes some minutes per model). Everything
# goes under OUT (default tmp/bench-batch1/<timestamp>); the table covers every eval run there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
F=${F:-../shared/fixtures}
OUT=${OUT:-tmp/bench-batch1/$(date +%Y%m%d-%H%M%S)}
STEPS=${STEPS:-bench eval}
if [ $# -gt 0 ]; then models=("$@"); else models=(yolov10n-synth-raw84 yolov10m-synth-dfl144); fi
valA=(--data-root "$F/synthcoco" --instances "$F/synthcoco/annotations/instances_valA.json"
  --images-dir "$F/synthcoco/valA" --max-images 0)
for m in "${models[@]}"; do
  [ -f "$F/models/$m.onnx" ] || { echo "no $F/models/$m.onnx: set F to the fixtures folder" >&2; exit 2; }
done
mkdir -p "$OUT"
models_bench=("${models[@]}") models_eval=("${models[@]}")
[ -e "$OUT/rep5000.json" ] || "$PYTHON" scripts/dev/make_repeated_set.py \
  --instances "$F/synthcoco/annotations/instances_valA.json" --images-dir "$F/synthcoco/valA" \
  --images 5000 --out "$OUT/rep5000"

D=eval-onnx-defaults
[[ " $STEPS " == *" bench "* ]] || models_bench=()
for m in "${models_bench[@]}"; do
  "$PYTHON" scripts/cv-models/bench_eval_throughput.py --onnx-path "$F/models/$m.onnx" --batch-sizes 1 \
    --variants $D $D-main-thread $D-lanes-4 $D-lanes-4-main-thread $D-lanes-6 $D-lanes-6-main-thread \
    "${valA[@]}" --min-seconds 2 --skip-sequential --no-ultralytics --out "$OUT/bench-b1-$m.json" \
    | tee "$OUT/bench-b1-$m.txt"
done

runs=("" "--lane-threads main" "--lane-threads main --lanes 4" "--lane-threads main --lanes 6")
order=("${runs[@]}" "--lane-threads main --lanes 6" "--lane-threads main --lanes 4" "--lane-threads main" "")
[[ " $STEPS " == *" eval "* ]] || models_eval=()
for m in "${models_eval[@]}"; do
  for i in "${!order[@]}"; do
    flags=${order[$i]}
    # shellcheck disable=SC2086  # the flags split into words on purpose
    "$PYTHON" scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path "$F/models/$m.onnx" --batch-size 1 \
      --data-root "$F/synthcoco" --instances "$OUT/rep5000.json" --images-dir "$OUT/rep5000" --max-images 0 \
      $flags --no-progress --out "$OUT/eval-$m-$i/"
  done
done

"$PYTHON" - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for metrics in sorted(out.glob("eval-*/metrics.json"), key=lambda p: p.stat().st_mtime):
    d = json.loads(metrics.read_text())
    t, b = d["timings"], d["run"]["backend"]
    rows.append({
        "run": metrics.parent.name,
        "model": Path(d["model_path"]).stem,
        "lanes": b.get("lanes"),
        "lane_threads": b.get("lane_threads"),
        "images_per_s": t["end_to_end_images_per_s"],
        "start_seconds": (t.get("start_seconds") or {}).get("total"),
        "AP": d["metrics"].get("mAP_50_95"),
        "in_flight": t.get("in_flight"),
    })
(out / "eval-runs.json").write_text(json.dumps(rows, indent=1))
lines = ["| run | model | lanes | lane threads | img/s | start s | AP |", "|---|---|---|---|---|---|---|"]
for r in rows:
    start = "-" if r["start_seconds"] is None else f"{r['start_seconds']:.1f}"
    lines.append(
        f"| {r['run']} | {r['model']} | {r['lanes']} | {r['lane_threads']} | {r['images_per_s']:.0f} | {start} | "
        f"{r['AP']:.4f} |"
    )
(out / "eval-runs.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "results: $OUT"
