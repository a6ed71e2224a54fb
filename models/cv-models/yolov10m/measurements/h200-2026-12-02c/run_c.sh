# Device call C (a second lease, the final code): the TensorRT evaluator on the device-side double (ORT's side
# now on CUDA-graph lanes by default) with OpenCV and with --decode gpu; decoding alone; the latency of
# yolov10m-dfl144 as a user runs it (a plain default run; --io-binding with its defaults, i.e. CUDA-graph
# lanes; the same without graphs), each --io-binding run with a --latency-runs 100 pass.
source models/cv-models/yolov10m/measurements/h200-2026-12-02c/env.sh
exec > >(tee -a $OUT/run_c.log) 2>&1
echo "== commit $(cat models/cv-models/yolov10m/measurements/h200-2026-12-02c/COMMIT_C) $(date -u)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; nproc
echo "== GPU-only tests: --decode gpu (nvJPEG pixels, in-place letterbox, evaluator) and the device-side double"
YOLO_DEVICE_DOUBLE_REPORT=$OUT/trt_device_double_c.json timeout 240 python3 -m pytest tests/test_gpu_decode.py tests/test_trt_device_double.py -q -s -p no:cacheprovider -rs 2>&1 | grep "nvJPEG vs OpenCV\|passed\|failed\|SKIPPED\|FAILED\|Error" | tail -12
echo "== decoding alone: OpenCV (16 threads) vs nvImageCodec batch 32 / 64, pixels vs OpenCV"
timeout 150 python3 scripts/cv-models/bench_eval_throughput.py --decode-bench --batch-sizes 32 64 "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/decode.json 2>&1 | grep -v "nvjpeg2k\|nvtiff\|nvTIFF\|nvJPEG2000\|Note: If" | tail -9 | tee -a $OUT/tables_c.txt
for v in default iobinding nograph; do
  case $v in
    default) F=();;
    iobinding) F=(--io-binding --latency-runs 100);;
    nograph) F=(--io-binding --latency-runs 100 --provider-option CUDAExecutionProvider:enable_cuda_graph=0);;
  esac
  echo "== latency: ${F[*]:-(no flags)} (defaults otherwise)"
  timeout 120 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider "${F[@]}" "${DATA[@]}" --max-images 0 --no-progress --out $W/lat-$v/metrics.json 2>&1 | tail -3
done
python3 - $W $OUT/latency_c.json <<'PY' | tee -a $OUT/tables_c.txt
import json, sys
from pathlib import Path
out = {}
for v in ("default", "iobinding", "nograph"):
    p = Path(sys.argv[1]) / f"lat-{v}" / "metrics.json"
    if not p.is_file():
        out[v] = {"missing": True}; print(f"{v:<10} missing"); continue
    m = json.loads(p.read_text()); t = m["timings"]; lat = m["latency"]; b = m["run"]["backend"]
    lone = (t.get("latency_pass") or {}).get("gpu")
    out[v] = {"latency": lat, "lone_gpu": lone, "ratio_to_lone": lat["median_ms"] / lone["median_ms"] if lone else None,
              "mean_over_median": lat["mean_ms"] / lat["median_ms"], "end_to_end_images_per_s": t["end_to_end_images_per_s"],
              "metrics": m["metrics"], "gpu_order": b.get("gpu_order"), "cuda_graph": b.get("cuda_graph"),
              "cuda_graph_fallback": b.get("cuda_graph_fallback"), "latency_timing": m["latency_timing"], "warmup_runs": m["warmup_runs"]}
    r = f"ratio to lone batch {out[v]['ratio_to_lone']:.3f} (lone GPU median {lone['median_ms']:.2f})" if lone else "no latency pass"
    print(f"{v:<10} latency median {lat['median_ms']:.2f} mean {lat['mean_ms']:.2f} (mean/median {out[v]['mean_over_median']:.3f}) p99 {lat['p99_ms']:.2f} | {r} "
          f"| e2e {t['end_to_end_images_per_s']:.1f} img/s | graph {b.get('cuda_graph')} | {str(b.get('gpu_order'))[:7]}")
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
echo "== done $(date -u)"
