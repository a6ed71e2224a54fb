"""CUDA-event GPU time of a lone batch: ORT CUDA IO binding, one lane, nothing else in flight.

python lone_batch.py MODEL.onnx [RUNS]  -> JSON on stdout: median/p90 of the CUDA-event compute time
(events around the ORT run on the lane's stream) and of the host wall time of each whole infer
(H2D + run + D2H + synchronise), after 10 warm-up runs. Used by run_a.sh beside it.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from common.ort.io_binding import OrtCudaBackend

model, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200
backend = OrtCudaBackend(model, max_batch=1, lanes=1)
backend.warmup(1, 10)
x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
if hasattr(backend, "latency_runs"):  # LaneTiming: back-to-back single-batch runs on one lane, lane events
    got = backend.latency_runs(x, runs)
    gpu, wall = list(got["gpu_ms"]), list(got["host_ms"])
else:  # older OrtCudaBackend: events around the ORT run only
    backend.gpu_ms.clear()
    wall = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.infer(x)
        wall.append((time.perf_counter() - t0) * 1000.0)
    gpu = list(backend.gpu_ms)
backend.close()
print(
    json.dumps(
        {
            "model": model,
            "runs": runs,
            "lanes": 1,
            "batch": 1,
            "timing": "latency_runs" if hasattr(backend, "latency_runs") else "events around the ORT run",
            "gpu_compute_ms": {"median": float(np.median(gpu)), "p90": float(np.percentile(gpu, 90))},
            "host_wall_ms": {"median": float(np.median(wall)), "p90": float(np.percentile(wall, 90))},
        }
    )
)
