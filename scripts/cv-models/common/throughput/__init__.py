"""The throughput wing: what makes an evaluation fast, never what makes it right. Lanes of GPU work (ONNX Runtime
IO binding, TensorRT contexts), loader processes, NVRTC pre- and post-processing kernels, nvImageCodec decoding,
GPU monitoring, and the benchmark (``bench``) with its replay. It plugs into the core through
``common.eval.protocols``."""
