# (As ../h200-2026-12-02c/env.sh, without nvImageCodec this time: --decode gpu is not measured here.)
# Sourced by run_g.sh / run_h.sh on the GPU machine, in the root of the copy of the working tree that
# travelled. The staging calls before them left /root/stage/chunk.* (see stage.sh beside this file): the
# bundle holds onnxruntime-gpu 1.31.1 (unpacked wheel, xz), the pycocotools and faster-coco-eval wheels,
# NVIDIA's real TensorRT 11.4.0.106 cp312 bindings with stand-in native libraries, and the fixtures.
set -u
export PYTHONUNBUFFERED=1
R=$PWD; W=/root/work; B=/root/b; FIX=$B/fixtures; mkdir -p $W
if [ ! -f $B/.done ]; then
  (cd /root/stage && cat chunk.* > bundle.tar && sha256sum -c "$(ls $R/.device/part-*/bundle.sha | head -1)") || { echo "bundle incomplete"; ls -la /root/stage; exit 3; }
  mkdir -p $B && tar -xf /root/stage/bundle.tar -C $B && rm -f /root/stage/bundle.tar
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $B/wheels/*.whl || exit 4
  python3 -c "import tarfile; tarfile.open('$B/ort.tar.xz').extractall('/tmp/site')" || exit 5
  for f in $FIX/models/*.onnx.xz; do python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3], 'wb'))" $f && rm $f; done
  cp models/cv-models/yolov10n-synth/yolov10n-synth.onnx $FIX/models/   # the e2e fixture model (same file)
  touch $B/.done
fi
export PYTHONPATH=/tmp/site:$R/scripts/cv-models:$B/trtapi/site
NV=$(find /opt/torch/.venv/lib/python3.12/site-packages/nvidia -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')
JPEG=$(find /tmp/site/nvidia -name 'libnvjpeg.so*' 2>/dev/null | head -1); JPEG=${JPEG%/*}
export LD_LIBRARY_PATH=$B/trtapi/lib:${JPEG:+$JPEG:}$NV${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64
export YOLO_FIXTURES=$FIX YOLO_TRT_TEST_BACKEND=tensorrt
DATA=(--data-root $FIX/synthcoco --instances $FIX/synthcoco/annotations/instances_valA.json --images-dir $FIX/synthcoco/valA)
M=$FIX/models
