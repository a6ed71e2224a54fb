# Ultralytics 8.4.190 (YOLO(onnx).predict, its ONNX Runtime backend) beside our default --io-binding variant
# and the plain session, batch 1, yolov10n-synth-raw84 (issue 14: >= 3x Ultralytics), one process.
source models/cv-models/yolov10m/measurements/h200-2026-12-02b/env.sh
exec > >(tee -a $OUT/run_u.log) 2>&1
echo "== commit $(cat models/cv-models/yolov10m/measurements/h200-2026-12-02b/COMMIT) $(date -u)"
export YOLO_OFFLINE=1
python3 -c "import ultralytics, onnxruntime as o; print('ultralytics', ultralytics.__version__, 'ort', o.__version__, o.get_available_providers())"
timeout 200 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10n-synth-raw84.onnx --batch-sizes 1 --variants ort-cuda-iobinding-gpu-letterbox-gpu-post --skip-sequential "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/ultralytics_u.json 2>&1 | grep -v "^WARNING\|onnxruntime_pybind" | tail -12
echo "== done $(date -u)"
