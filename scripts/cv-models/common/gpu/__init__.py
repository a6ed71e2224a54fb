"""CUDA through cuda-python: device / pinned memory, streams, events, NVRTC kernels (pre- and
post-processing), GPU monitoring."""
