"""ONNX Runtime: the session backend, the IO-binding lanes on the CUDA EP, execution-provider options."""
