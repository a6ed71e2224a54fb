# Sourced by run_a.sh / run_b.sh on the GPU machine, in the root of the copy of the project that travelled.
# .carry/ holds: the last bundle chunk + bundle.sha (wheels, the TensorRT 11.4 Python API with stand-in libs,
# the fixture models and valA), code/ (this branch's scripts/, tests/, pyproject.toml, COMMIT), run/ (these scripts).
set -u
export PYTHONUNBUFFERED=1
R=$PWD; W=/root/work; FIX=/root/b/fixtures; mkdir -p $W /root/stage
if [ ! -f /root/b/.done ]; then
  cp .carry/chunk.* /root/stage/
  (cd /root/stage && cat chunk.* > bundle.tar && sha256sum -c "$R/.carry/bundle.sha") || { echo "bundle incomplete"; ls -la /root/stage; exit 3; }
  mkdir -p /root/b && tar -xf /root/stage/bundle.tar -C /root/b && rm -f /root/stage/bundle.tar
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /root/b/wheels/*.whl || exit 4
  cp models/cv-models/yolov10n-synth/yolov10n-synth.onnx $FIX/models/   # the e2e fixture model (same file, sha 3044cc75)
  touch /root/b/.done
fi
cp -r .carry/code/scripts .carry/code/tests .carry/code/pyproject.toml "$R"/   # this branch's code over main's
export PYTHONPATH=/tmp/site:$R/scripts/cv-models:/root/b/trtapi/site
NV=$(find /opt/torch/.venv/lib/python3.12/site-packages/nvidia -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH=/root/b/trtapi/lib:$NV${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64
export YOLO_FIXTURES=$FIX YOLO_TRT_TEST_BACKEND=tensorrt
DATA=(--data-root $FIX/synthcoco --instances $FIX/synthcoco/annotations/instances_valA.json --images-dir $FIX/synthcoco/valA)
M=$FIX/models
