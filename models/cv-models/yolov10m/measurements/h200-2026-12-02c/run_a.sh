# Device call A: environment; the GPU-only tests (nvJPEG pixels vs OpenCV and the letterbox reading decoded
# images in place, the pre-/post-processing kernels, the TensorRT evaluator on the device-side double with
# OpenCV and with --decode gpu); decoding alone (OpenCV threads vs nvImageCodec); the latency of
# yolov10m-dfl144 with --io-binding as a user runs it, with --cuda-graph, and with --decode gpu.
source models/cv-models/yolov10m/measurements/h200-2026-12-02c/env.sh
exec > >(tee -a $OUT/run_a.log) 2>&1
echo "== commit $(cat models/cv-models/yolov10m/measurements/h200-2026-12-02c/COMMIT) $(date -u)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
nproc; python3 -V
python3 -c "import onnxruntime as o, numpy, cv2, cuda.bindings; print('ort', o.__version__, o.get_available_providers(), 'numpy', numpy.__version__, 'cv2', cv2.__version__, 'cuda-bindings', cuda.bindings.__version__)"
python3 -c "
from common.data.decode import import_nvimgcodec, nvjpeg_missing, _import_log
m = import_nvimgcodec(); print('nvimgcodec', getattr(m, '__version__', '?'), 'nvjpeg missing:', nvjpeg_missing())
print('nvimgcodec import said:', ' | '.join(l for l in _import_log[0].splitlines() if 'ERROR' in l)[:600])"
echo "== GPU-only tests"
YOLO_DEVICE_DOUBLE_REPORT=$OUT/trt_device_double.json timeout 300 python3 -m pytest tests/test_gpu_decode.py tests/test_gpu_preprocess.py tests/test_gpu_postprocess.py tests/test_trt_device_double.py -q -s -p no:cacheprovider -rs 2>&1 | grep -v "^$\|nvjpeg2k\|nvtiff\|nvTIFF\|nvJPEG2000\|Note: If" | tail -30
echo "== decoding alone: OpenCV (16 threads) vs nvImageCodec batch 32 / 64, pixels vs OpenCV"
timeout 120 python3 scripts/cv-models/bench_eval_throughput.py --decode-bench --batch-sizes 32 64 "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/decode.json 2>/dev/null | tee -a $OUT/tables.txt
for v in iobinding graph decode graph-decode; do
  case $v in
    iobinding) F=(--io-binding);;
    graph) F=(--io-binding --cuda-graph);;
    decode) F=(--io-binding --preprocess gpu-letterbox --decode gpu);;
    graph-decode) F=(--io-binding --cuda-graph --preprocess gpu-letterbox --decode gpu);;
  esac
  echo "== latency: ${F[*]} --latency-runs 100 (defaults otherwise)"
  timeout 120 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider "${F[@]}" --latency-runs 100 "${DATA[@]}" --max-images 0 --no-progress --out $W/lat-$v/metrics.json 2>&1 | grep -v "nvjpeg2k\|nvtiff\|nvTIFF\|nvJPEG2000\|Note: If" | tail -4
done
python3 - $W $OUT/latency.json <<'PY' | tee -a $OUT/tables.txt
import json, sys
from pathlib import Path
out = {}
for v in ("iobinding", "graph", "decode", "graph-decode"):
    p = Path(sys.argv[1]) / f"lat-{v}" / "metrics.json"
    if not p.is_file():
        out[v] = {"missing": True}; print(f"{v:<14} missing"); continue
    m = json.loads(p.read_text()); t = m["timings"]; lat = m["latency"]; lone = t["latency_pass"]["gpu"]
    out[v] = {"latency": lat, "lone_gpu": lone, "lone_host": t["latency_pass"]["host"], "ratio": lat["median_ms"] / lone["median_ms"],
              "end_to_end_images_per_s": t["end_to_end_images_per_s"], "AP": m["metrics"].get("AP") or m["metrics"],
              "gpu_order": m["run"]["backend"].get("gpu_order"), "cuda_graph": m["run"]["backend"].get("cuda_graph"),
              "decode": t.get("decode"), "latency_timing": m["latency_timing"]}
    print(f"{v:<14} latency median {lat['median_ms']:.2f} mean {lat['mean_ms']:.2f} p99 {lat['p99_ms']:.2f} | lone GPU median {lone['median_ms']:.2f} "
          f"| ratio {out[v]['ratio']:.3f} | e2e {t['end_to_end_images_per_s']:.1f} img/s | {out[v]['gpu_order'][:7]}")
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
echo "== done $(date -u)"
