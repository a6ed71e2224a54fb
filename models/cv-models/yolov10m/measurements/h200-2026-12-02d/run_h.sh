# Device call H (right after G, same lease): batch 1 of yolov10m-dfl144 and yolov10n-raw84 with the same
# variants; the dynbatch b8/b32 curve again with a 1 ms GIL switch interval; pipeline capacity (replay) with
# threads and processes; latency as a user runs it (a plain default run; --io-binding with threads and with
# processes, each with a --latency-runs 100 pass).
D=models/cv-models/yolov10m/measurements/h200-2026-12-02d
source $D/env.sh
exec > >(tee -a $OUT/run_h.log) 2>&1
echo "== commit $(cat $D/COMMIT) $(date -u)"
V=(ort-cuda-iobinding-gpu-letterbox-gpu-post-procs ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap-procs)
echo "== batch 1 end to end vs ceiling"
for m in yolov10m-synth-dfl144 yolov10n-synth-raw84; do
  timeout 100 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/$m.onnx --batch-sizes 1 --variants "${V[@]}" --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $W/b1_$m.json 2>/dev/null | tee -a $OUT/tables_h.txt
done
python3 -c "
import json, glob, os
json.dump({os.path.basename(p)[3:-5]: json.load(open(p)) for p in sorted(glob.glob('$W/b1_*.json'))}, open('$OUT/batch1_h.json', 'w'), indent=1)"
echo "== dynbatch b8 b32, --switch-interval-ms 1"
timeout 150 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10n-synth-dynbatch.onnx --batch-sizes 8 32 --variants ort-cuda-iobinding-gpu-letterbox-gpu-post-procs --switch-interval-ms 1 --skip-sequential --no-ultralytics "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/curve_h_switch1.json 2>/dev/null | tee -a $OUT/tables_h.txt
echo "== pipeline capacity (replay), yolov10m-synth-dfl144: threads vs processes"
timeout 120 python3 scripts/cv-models/bench_eval_throughput.py --onnx-path $M/yolov10m-synth-dfl144.onnx --replay --replay-modes gpu-letterbox+gpu-post gpu-letterbox+gpu-post+procs --batch-sizes 1 32 "${DATA[@]}" --max-images 0 --min-seconds 3 --out $OUT/replay_h.json 2>/dev/null | tee -a $OUT/tables_h.txt
for v in default iobinding iobinding-procs; do
  case $v in
    default) F=();;
    iobinding) F=(--io-binding --latency-runs 100);;
    iobinding-procs) F=(--io-binding --latency-runs 100 --loaders processes);;
  esac
  echo "== latency: ${F[*]:-(no flags)} (defaults otherwise)"
  timeout 100 python3 scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path $M/yolov10m-synth-dfl144.onnx --providers CUDAExecutionProvider "${F[@]}" "${DATA[@]}" --max-images 0 --no-progress --out $W/lat-$v/metrics.json 2>&1 | tail -2
  cp $W/lat-$v/metrics.json $OUT/latency_h_$v.json 2>/dev/null
done
echo "== done $(date -u)"
