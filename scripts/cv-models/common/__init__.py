"""Shared pieces of the YOLOv10 TensorRT / ONNX Runtime toolkit.

One job per module:

- ``errors``    -- UserError: bad input that ends a CLI with a one-line message and exit 2
- ``cli``       -- run a script's main() with that error contract; shared argparse flags
- ``results``   -- atomic file writes, latency statistics, run directories under tmp/
- ``images``    -- image loading, letterbox / unletterbox
- ``yolov10``   -- output-layout detection, decoders, NMS
- ``coco``      -- COCO-80 names, dataset and image-id selection, results JSON, COCOeval
- ``backends``  -- the Backend protocol and the ONNX Runtime backend
- ``pipeline``  -- evaluate(backend, dataset, options): the one evaluation loop
"""
