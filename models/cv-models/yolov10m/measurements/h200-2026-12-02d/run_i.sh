# Device call I (a second lease, after restaging): loader tasks of at least 4 images at every batch size
# (load_window). The dynbatch curve and batch 1 of yolov10m-dfl144 and yolov10n-raw84 with the default
# (loader threads) and loader processes; the latency of a plain default run and of --io-binding.
D=models/cv-models/yolov10m/measurements/h200-2026-12-02d
source $D/env.sh
exec > >(tee -a $OUT/run_i.log) 2>&1
echo "== commit $(cat $D/COMMIT_I) $(date -u)"
V=(ort-cuda-iobinding-gpu-letterbox-gpu-post-procs ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap-procs)
echo "== batch curve, yolov10n-synth-dynbatch, ORT CUDA"
timeout 200 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10n-synth-dynbatch.onnx --batch-sizes 1 8 32 --variants "${V[@]}" --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/curve_i.json 2>/dev/null | tee -a $OUT/tables_i.txt
echo "== batch 1 end to end vs ceiling"
for m in yolov10m-synth-dfl144 yolov10n-synth-raw84; do
  timeout 80 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/$m.onnx --batch-sizes 1 --variants "${V[@]}" --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $W/b1_$m.json 2>/dev/null | tee -a $OUT/tables_i.txt
done
python3 -c "
import json, glob, os
json.dump({os.path.basename(p)[3:-5]: json.load(open(p)) for p in sorted(glob.glob('$W/b1_*.json'))}, open('$OUT/batch1_i.json', 'w'), indent=1)"
for v in default iobinding; do
  case $v in
    default) F=();;
    iobinding) F=(--io-binding --latency-runs 100);;
  esac
  echo "== latency: ${F[*]:-(no flags)} (defaults otherwise)"
  timeout 100 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider "${F[@]}" "${DATA[@]}" --max-images 0 --no-progress --out $W/lat-$v/metrics.json 2>&1 | tail -2
  cp $W/lat-$v/metrics.json $OUT/latency_i_$v.json 2>/dev/null
done
echo "== done $(date -u)"
