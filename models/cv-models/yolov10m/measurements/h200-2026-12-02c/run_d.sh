# Device call D (right after C, same machine): the dynbatch batch curve (1, 8, 32) of the default variant (CUDA-
# graph lanes where ORT captures), per-kernel lanes and --decode gpu; batch 1 end to end vs ceiling for
# m-dfl144 and n-raw84, default variant and per-kernel lanes.
source models/cv-models/yolov10m/measurements/h200-2026-12-02c/env.sh
exec > >(tee -a $OUT/run_d.log) 2>&1
echo "== commit $(cat models/cv-models/yolov10m/measurements/h200-2026-12-02c/COMMIT_C) $(date -u)"
V=(ort-cuda-iobinding-nograph-gpu-letterbox-gpu-post ort-cuda-iobinding-gpu-decode-gpu-letterbox-gpu-post)
echo "== batch curve, yolov10n-synth-dynbatch, ORT CUDA"
timeout 330 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10n-synth-dynbatch.onnx --batch-sizes 1 8 32 --variants "${V[@]}" --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/curve_d.json 2>/dev/null | tee -a $OUT/tables_d.txt
echo "== batch 1 end to end vs ceiling"
for m in yolov10m-synth-dfl144 yolov10n-synth-raw84; do
  timeout 120 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/$m.onnx --batch-sizes 1 --variants ort-cuda-iobinding-nograph-gpu-letterbox-gpu-post --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $W/b1_$m.json 2>/dev/null | tee -a $OUT/tables_d.txt
done
python3 -c "
import json, glob, os
json.dump({os.path.basename(p)[3:-5]: json.load(open(p)) for p in sorted(glob.glob('$W/b1_*.json'))}, open('$OUT/batch1_d.json', 'w'), indent=1)"
echo "== done $(date -u)"
