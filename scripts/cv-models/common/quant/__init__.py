"""Quantization: calibration tensors, ModelOpt calls, Q/DQ presets and checks."""
