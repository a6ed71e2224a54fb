# Device call C (a third lease of the same day, the final code, same bundle): the defaults as a user runs
# them. The device-side TensorRT double test; eval-onnx --io-binding with default flags (--gpu-order auto)
# on yolov10m-dfl144 at batch 1 with a --latency-runs pass; the dynbatch curve of the default variant.
source models/cv-models/yolov10m/measurements/h200-2026-12-02b/env.sh
exec > >(tee -a $OUT/run_c.log) 2>&1
echo "== commit $(cat models/cv-models/yolov10m/measurements/h200-2026-12-02b/COMMIT) $(date -u)"
YOLO_DEVICE_DOUBLE_REPORT=$OUT/trt_device_double_c.json timeout 120 python3 -m pytest tests/test_trt_device_double.py -q -p no:cacheprovider 2>&1 | tail -3
echo "== eval-onnx --io-binding, default flags otherwise, --latency-runs 100"
timeout 120 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider --io-binding --latency-runs 100 "${DATA[@]}" --max-images 0 --no-progress --out $W/c1/metrics.json 2>/dev/null | tail -6
python3 -c "
import json; m=json.load(open('$W/c1/metrics.json')); t=m['timings']; l=m['latency']; g=t['latency_pass']['gpu']['median_ms']
print('gpu_order', m['run']['backend']['gpu_order']); print('latency median', round(l['median_ms'],2), 'lone', round(g,2), 'ratio', round(l['median_ms']/g,3), 'e2e', round(t['end_to_end_images_per_s'],1))
json.dump({'latency': l, 'timings': t, 'metrics': m['metrics'], 'backend': m['run']['backend']}, open('$OUT/default_iobinding_c.json', 'w'), indent=1)"
echo "== dynbatch curve, the default variant (gpu-letterbox + gpu-post, --gpu-order auto)"
timeout 240 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10n-synth-dynbatch.onnx --batch-sizes 1 8 32 --variants ort-cuda-iobinding-gpu-letterbox-gpu-post --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/curve_c.json 2>/dev/null | tee -a $OUT/tables_c.txt
echo "== done $(date -u)"
