"""CUDA through cuda-python: device and pinned memory, streams, events and graphs (``cuda_mem``)."""
