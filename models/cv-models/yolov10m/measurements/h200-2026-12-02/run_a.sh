# Device call A: bundle + install, environment, the device-side TensorRT double test, the default-run
# latency figures of yolov10m-dfl144, and replay capacity for three layouts. Writes <= 8 files to $OUT.
source .carry/run/env.sh
exec > >(tee -a $OUT/run_a.log) 2>&1
echo "== commit $(cat .carry/code/COMMIT) $(date -u)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
nproc; python3 -V
python3 -c "import onnxruntime as o, numpy, cv2, pycocotools, cuda.bindings; print('ort', o.__version__, o.get_available_providers(), 'numpy', numpy.__version__, 'cv2', cv2.__version__, 'cuda-bindings', cuda.bindings.__version__)"
python3 -c "from cuda.bindings import nvrtc; print('nvrtc', nvrtc.nvrtcVersion())" || echo "NVRTC NOT LOADABLE"
python3 -c "import tensorrt as t; print('tensorrt API (stand-in libs)', t.__version__)"
python3 -c "import ultralytics; print('ultralytics', ultralytics.__version__)" 2>/dev/null || echo "ultralytics: not installed"
echo "== device-side TensorRT double test (valA, 300 images)"
YOLO_DEVICE_DOUBLE_REPORT=$OUT/trt_device_double.json timeout 200 python3 -m pytest tests/test_trt_device_double.py -q -x -p no:cacheprovider -rs 2>&1 | tail -25
echo "== fresh default run: eval_yolov10m_onnx_coco.py, data paths + CUDA provider only"
timeout 150 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider "${DATA[@]}" --max-images 0 --no-progress --out $W/default/metrics.json | tail -8
echo "== the same with --io-binding (plus --latency-runs 100 where the evaluator has it: a pass after the evaluation)"
LR=$(python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --help | grep -q -- --latency-runs && echo "--latency-runs 100")
timeout 150 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider --io-binding $LR "${DATA[@]}" --max-images 0 --no-progress --out $W/iobinding/metrics.json | tail -8
echo "== lone batch (1 lane, nothing else in flight)"
timeout 90 python3 .carry/run/lone_batch.py $M/yolov10m-synth-dfl144.onnx 200 > $W/lone.json; cat $W/lone.json
python3 - <<PY
import json, pathlib
W = pathlib.Path("$W"); out = {}
for k in ("default", "iobinding"):
    p = W / k / "metrics.json"
    if p.is_file():
        m = json.loads(p.read_text()); out[k] = {"latency": m["latency"], "timings": m["timings"], "metrics": m["metrics"],
            "warmup_runs": m["warmup_runs"], "backend": m["run"]["backend"], "args": m["args"]}
p = W / "lone.json"
if p.is_file() and p.read_text().strip(): out["lone_batch"] = json.loads(p.read_text())
d, i, l = out.get("default", {}).get("latency"), out.get("iobinding", {}).get("latency"), out.get("lone_batch")
if d: print(f"default run: latency.mean_ms {d['mean_ms']:.2f} vs median_ms {d['median_ms']:.2f} (ratio {d['mean_ms']/d['median_ms']:.2f}); e2e {out['default']['timings']['end_to_end_images_per_s']:.1f} img/s")
lp = out.get("iobinding", {}).get("timings", {}).get("latency_pass")
if i and lp: print("--io-binding latency_pass:", json.dumps(lp))
if i and l: print(f"--io-binding: latency.median_ms {i['median_ms']:.2f} vs lone-batch CUDA-event GPU {l['gpu_compute_ms']['median']:.2f} ms (ratio {i['median_ms']/l['gpu_compute_ms']['median']:.2f}); e2e {out['iobinding']['timings']['end_to_end_images_per_s']:.1f} img/s")
pathlib.Path("$OUT/latency.json").write_text(json.dumps(out, indent=1))
PY
echo "== replay capacity (pipeline, default workers), batch 1 and 32"
for m in yolov10m-synth-dfl144 yolov10n-synth-raw84 yolov10n-synth; do
  timeout 170 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/$m.onnx --replay --batch-sizes 1 32 "${DATA[@]}" --max-images 0 --min-seconds 3 --out $W/replay_$m.json 2>/dev/null | tee -a $OUT/tables_a.txt
done
python3 -c "
import json, glob, os
json.dump({os.path.basename(p)[7:-5]: json.load(open(p)) for p in sorted(glob.glob('$W/replay_*.json'))}, open('$OUT/replay.json', 'w'), indent=1)"
echo "== done $(date -u)"
