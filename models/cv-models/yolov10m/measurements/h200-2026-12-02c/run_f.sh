# Device call F (a third lease, the final code: each lane on one thread of its own, so ORT's per-thread CUDA
# graph is captured once per lane, in warm-up): the device-side double and --decode gpu tests; --io-binding
# latency with its defaults; the dynbatch curve and batch 1 with CUDA-graph lanes in the serial order (auto),
# overlapping, and without graphs.
source models/cv-models/yolov10m/measurements/h200-2026-12-02c/env.sh
exec > >(tee -a $OUT/run_f.log) 2>&1
echo "== commit $(cat models/cv-models/yolov10m/measurements/h200-2026-12-02c/COMMIT_F) $(date -u)"
YOLO_DEVICE_DOUBLE_REPORT=$OUT/trt_device_double_f.json timeout 200 python3 -m pytest tests/test_gpu_decode.py tests/test_trt_device_double.py -q -s -p no:cacheprovider -rs 2>&1 | grep "nvJPEG vs OpenCV\|passed\|failed\|SKIPPED\|FAILED\|Error" | tail -12
echo "== latency: --io-binding --latency-runs 100 (defaults otherwise)"
timeout 100 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider --io-binding --latency-runs 100 "${DATA[@]}" --max-images 0 --no-progress --out $W/lat/metrics.json 2>&1 | tail -2
python3 - $W/lat/metrics.json $OUT/latency_f.json <<'PY' | tee -a $OUT/tables_f.txt
import json, sys
m = json.load(open(sys.argv[1])); t = m["timings"]; lat = m["latency"]; lone = t["latency_pass"]["gpu"]; b = m["run"]["backend"]
out = {"latency": lat, "lone_gpu": lone, "ratio_to_lone": lat["median_ms"] / lone["median_ms"], "end_to_end_images_per_s": t["end_to_end_images_per_s"],
       "metrics": m["metrics"], "gpu_order": b["gpu_order"], "cuda_graph": b["cuda_graph"], "cuda_graph_fallback": b["cuda_graph_fallback"]}
print(f"iobinding latency median {lat['median_ms']:.2f} mean {lat['mean_ms']:.2f} p99 {lat['p99_ms']:.2f} | lone GPU median {lone['median_ms']:.2f} | ratio {out['ratio_to_lone']:.3f} | e2e {out['end_to_end_images_per_s']:.1f} | graph {b['cuda_graph']} | {b['gpu_order'][:7]}")
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
V=(ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap ort-cuda-iobinding-nograph-gpu-letterbox-gpu-post)
echo "== batch curve, yolov10n-synth-dynbatch, ORT CUDA"
timeout 250 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10n-synth-dynbatch.onnx --batch-sizes 1 8 32 --variants "${V[@]}" --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/curve_f.json 2>/dev/null | tee -a $OUT/tables_f.txt
echo "== batch 1 end to end vs ceiling"
for m in yolov10m-synth-dfl144 yolov10n-synth-raw84; do
  timeout 80 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/$m.onnx --batch-sizes 1 --variants "${V[@]}" --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $W/b1_$m.json 2>/dev/null | tee -a $OUT/tables_f.txt
done
python3 -c "
import json, glob, os
json.dump({os.path.basename(p)[3:-5]: json.load(open(p)) for p in sorted(glob.glob('$W/b1_*.json'))}, open('$OUT/batch1_f.json', 'w'), indent=1)"
echo "== done $(date -u)"
