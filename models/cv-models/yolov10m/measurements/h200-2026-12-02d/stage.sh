# Run here (the CPU machine) before the device calls: packs what the GPU machine lacks into one tar and
# splits it into .device/part-NN/chunk.NN (each small enough to travel beside the working tree in one call),
# with bundle.sha in each part, and COMMIT (the code's commit) beside this script. Then, on the GPU machine, one call per part:
#   carry [".device/part-NN"]  command: mkdir -p /root/stage && cp .device/part-NN/chunk.* /root/stage/
# and the last call runs run_a.sh (env.sh joins, checks and unpacks the bundle).
# Needs: ORT_XZ (the onnxruntime-gpu 1.31.1 cp312 wheel unpacked and tar'ed with xz), WHEELS (a folder with the
# pycocotools 2.0.11 and faster-coco-eval 1.8.0 wheels), TRT_WHEEL (tensorrt_cu13_bindings 11.4.0.106
# cp312), TRT_LIB (the stand-in libs of ../shared/trt-stubs/install-trt-api.sh 11.4.0.106), FIX (fixtures).
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
grep -qxF '/.device/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.device/' >> .git/info/exclude; }
b=$(mktemp -d)
mkdir -p "$b/wheels" "$b/trtapi/site/tensorrt" "$b/trtapi/lib" "$b/fixtures/models"
cp "$ORT_XZ" "$b/ort.tar.xz"; cp "$WHEELS"/*.whl "$b/wheels/"
python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$TRT_WHEEL" "$b/trtapi/site"
printf 'from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__\n' > "$b/trtapi/site/tensorrt/__init__.py"
cp -a "$TRT_LIB"/. "$b/trtapi/lib/"
for m in yolov10m-synth-dfl144 yolov10n-synth-raw84 yolov10n-synth-dynbatch; do
  if [ -f "${MODELS_XZ:-/nonexistent}/$m.onnx.xz" ]; then cp "$MODELS_XZ/$m.onnx.xz" "$b/fixtures/models/"; else xz -9 -T2 -c "$FIX/models/$m.onnx" > "$b/fixtures/models/$m.onnx.xz"; fi
done
mkdir -p "$b/fixtures/synthcoco/annotations"
cp "$FIX/synthcoco/annotations/instances_valA.json" "$b/fixtures/synthcoco/annotations/"
cp -a "$FIX/synthcoco/valA" "$b/fixtures/synthcoco/"
rm -rf .device && mkdir -p .device
tar -C "$b" -cf .device/bundle.tar .
(cd .device && sha256sum bundle.tar > bundle.sha && split -b "${PART_MIB:-42}M" -d -a 2 bundle.tar chunk.)
for c in .device/chunk.*; do d=.device/part-${c##*.}; mkdir -p "$d"; mv "$c" "$d/"; cp .device/bundle.sha "$d/"; done
rm -rf .device/bundle.tar "$b"
git rev-parse HEAD > models/cv-models/yolov10m/measurements/h200-2026-12-02d/COMMIT  # travels (untracked, not ignored)
du -sh .device/part-*
