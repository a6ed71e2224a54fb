# Device call B (right after A, same machine): the dynbatch batch curve (serial and overlapping lanes) with
# time to metrics for 5000 images, and batch-1 end to end vs ceiling for m-dfl144 and n-raw84.
source models/cv-models/yolov10m/measurements/h200-2026-12-02b/env.sh
exec > >(tee -a $OUT/run_b.log) 2>&1
echo "== commit $(cat models/cv-models/yolov10m/measurements/h200-2026-12-02b/COMMIT) $(date -u)"
echo "== batch curve, yolov10n-synth-dynbatch, ORT CUDA; time to metrics for 5000 images at batch 32"
timeout 330 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10n-synth-dynbatch.onnx --batch-sizes 1 8 16 32 --variants ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap ort-cuda-iobinding-gpu-letterbox --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --time-to-metrics 5000 --out $OUT/curve.json 2>/dev/null | tee -a $OUT/tables_b.txt
echo "== batch 1 end to end vs ceiling"
for m in yolov10m-synth-dfl144 yolov10n-synth-raw84; do
  timeout 100 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/$m.onnx --batch-sizes 1 --variants ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap ort-cuda-plain --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $W/b1_$m.json 2>/dev/null | tee -a $OUT/tables_b.txt
done
python3 -c "
import json, glob, os
json.dump({os.path.basename(p)[3:-5]: json.load(open(p)) for p in sorted(glob.glob('$W/b1_*.json'))}, open('$OUT/batch1.json', 'w'), indent=1)"
echo "== done $(date -u)"
