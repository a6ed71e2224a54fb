# Device call A: environment, the GPU-only tests (batched letterbox kernel, post-processing kernels, the
# TensorRT evaluator on the device-side double), the latency figures of yolov10m-dfl144 (a fresh default
# run; --io-binding with its serial GPU order and with --overlap-lanes, each with a --latency-runs pass),
# and replay capacity for three layouts. Writes <= 8 files to $OUT.
source models/cv-models/yolov10m/measurements/h200-2026-12-02b/env.sh
exec > >(tee -a $OUT/run_a.log) 2>&1
echo "== commit $(cat models/cv-models/yolov10m/measurements/h200-2026-12-02b/COMMIT) $(date -u)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
nproc; python3 -V
python3 -c "import onnxruntime as o, numpy, cv2, pycocotools, faster_coco_eval, cuda.bindings; print('ort', o.__version__, o.get_available_providers(), 'numpy', numpy.__version__, 'cv2', cv2.__version__, 'faster-coco-eval', faster_coco_eval.__version__, 'cuda-bindings', cuda.bindings.__version__)"
python3 -c "from cuda.bindings import nvrtc; print('nvrtc', nvrtc.nvrtcVersion())" || echo "NVRTC NOT LOADABLE"
python3 -c "import tensorrt as t; print('tensorrt API (stand-in libs)', t.__version__)"
echo "== GPU-only tests: pre-processing kernels, post-processing kernels, TensorRT evaluator on the device-side double"
YOLO_DEVICE_DOUBLE_REPORT=$OUT/trt_device_double.json timeout 240 python3 -m pytest tests/test_gpu_preprocess.py tests/test_gpu_postprocess.py tests/test_trt_device_double.py -q -p no:cacheprovider -rs 2>&1 | tail -25
for v in default iobinding iobinding-overlap; do
  case $v in
    default) echo "== fresh default run: data paths + CUDA provider only"; F=();;
    iobinding) echo "== --io-binding (default serial GPU order) --latency-runs 100"; F=(--io-binding --latency-runs 100);;
    iobinding-overlap) echo "== --io-binding --overlap-lanes --latency-runs 100"; F=(--io-binding --overlap-lanes --latency-runs 100);;
  esac
  timeout 150 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider "${F[@]}" "${DATA[@]}" --max-images 0 --no-progress --out $W/$v/metrics.json | tail -6
done
python3 models/cv-models/yolov10m/measurements/h200-2026-12-02b/collect_latency.py $W $OUT/latency.json
echo "== replay capacity (pipeline, default workers), batch 1 and 32"
for m in yolov10m-synth-dfl144 yolov10n-synth-raw84 yolov10n-synth; do
  timeout 150 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/$m.onnx --replay --batch-sizes 1 32 "${DATA[@]}" --max-images 0 --min-seconds 3 --out $W/replay_$m.json 2>/dev/null | tee -a $OUT/tables_a.txt
done
python3 -c "
import json, glob, os
json.dump({os.path.basename(p)[7:-5]: json.load(open(p)) for p in sorted(glob.glob('$W/replay_*.json'))}, open('$OUT/replay.json', 'w'), indent=1)"
echo "== done $(date -u)"
