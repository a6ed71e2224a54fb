"""The shared package of the YOLOv10 TensorRT / ONNX Runtime toolkit, grouped by concern.

- ``core``    -- the UserError contract, the CLI wrapper, atomic writes and run folders, host facts
- ``data``    -- images (load, letterbox / unletterbox) and COCO (datasets, ids, results JSON, COCOeval)
- ``model``   -- YOLOv10 output layouts with the NumPy decode + NMS reference
- ``eval``    -- the one evaluation pipeline, the backend capability protocols, the evaluators' CLI
- ``gpu``     -- CUDA memory, streams and events (cuda-python), NVRTC pre- and post-processing kernels
- ``ort``     -- ONNX Runtime: session backend, IO-binding lanes, execution-provider options
- ``trt``     -- TensorRT / TensorRT-RTX: API loading, engine builds, runtime backend, environment inventory
- ``quant``   -- calibration tensors, ModelOpt calls, Q/DQ presets
- ``report``  -- per-image parity, run comparison, end-to-end validation
"""
