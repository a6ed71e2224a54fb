# The fourth call set (a small bundle for the Ultralytics comparison): like stage.sh, but only onnxruntime-gpu
# (xz), pycocotools, ultralytics 8.4.190 + ultralytics-thop 2.2.3 (pure Python; the image has torch,
# torchvision, matplotlib, pillow, pyyaml, requests, scipy, psutil; polars is imported lazily, not needed
# here), yolov10n-synth-raw84 and valA. Env: ORT_XZ, WHEELS (pycocotools + ultralytics + thop), FIX, MODELS_XZ.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
b=$(mktemp -d); mkdir -p "$b/wheels" "$b/fixtures/models" "$b/fixtures/synthcoco/annotations" "$b/trtapi/site" "$b/trtapi/lib"
cp "$ORT_XZ" "$b/ort.tar.xz"; cp "$WHEELS"/*.whl "$b/wheels/"
cp "$MODELS_XZ/yolov10n-synth-raw84.onnx.xz" "$b/fixtures/models/"
cp "$FIX/synthcoco/annotations/instances_valA.json" "$b/fixtures/synthcoco/annotations/"; cp -a "$FIX/synthcoco/valA" "$b/fixtures/synthcoco/"
rm -rf .device && mkdir -p .device
tar -C "$b" -cf .device/bundle.tar .
(cd .device && sha256sum bundle.tar > bundle.sha && split -b "${PART_MIB:-49}M" -d -a 2 bundle.tar chunk.)
for c in .device/chunk.*; do d=.device/part-${c##*.}; mkdir -p "$d"; mv "$c" "$d/"; cp .device/bundle.sha "$d/"; done
rm -rf .device/bundle.tar "$b"
git rev-parse HEAD > models/cv-models/yolov10m/measurements/h200-2026-12-02b/COMMIT
du -sh .device/part-*
