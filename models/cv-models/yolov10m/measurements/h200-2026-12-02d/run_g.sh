# Device call G (after the staging calls): the loaders as processes (--loaders processes) against threads.
# GPU-side tests (the TensorRT evaluator on the device-side double; the loader tests), then the dynbatch curve
# (b1, b8, b32) with the default (graph lanes, serial order, loader threads), loader processes, and both
# with the lanes overlapping.
D=models/cv-models/yolov10m/measurements/h200-2026-12-02d
source $D/env.sh
exec > >(tee -a $OUT/run_g.log) 2>&1
echo "== commit $(cat $D/COMMIT) $(date -u)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; nproc; df -h /dev/shm | tail -1
echo "== GPU-side tests: the device-side double, the loaders"
YOLO_DEVICE_DOUBLE_REPORT=$OUT/trt_device_double_g.json timeout 200 python3 -m pytest tests/test_trt_device_double.py tests/test_loaders.py -q -s -p no:cacheprovider -rs 2>&1 | grep "passed\|failed\|SKIPPED\|FAILED\|Error" | tail -12
V=(ort-cuda-iobinding-gpu-letterbox-gpu-post-procs ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap-procs)
echo "== batch curve, yolov10n-synth-dynbatch, ORT CUDA: threads vs processes"
timeout 330 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10n-synth-dynbatch.onnx --batch-sizes 1 8 32 --variants "${V[@]}" --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/curve_g.json 2>/dev/null | tee -a $OUT/tables_g.txt
echo "== done $(date -u)"
