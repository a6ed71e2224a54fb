"""TensorRT, TensorRT-RTX: which API is installed, engine builds (parse, config, timing cache, write),
the runtime backend, the environment inventory used by the doctor and setup."""
