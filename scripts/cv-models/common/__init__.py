"""The shared package of the YOLOv10 TensorRT / ONNX Runtime toolkit.

Read an evaluation end to end in five files:
1. ``data/images.py``     -- decode + letterbox (OpenCV: the reference pixels) and back to image coordinates
2. ``ort/session.py``     -- a backend: one ONNX Runtime session, ``infer(batch)`` (TensorRT: ``trt/runtime.py``)
3. ``model/yolov10.py``   -- the YOLOv10 output layouts, decode + NMS in NumPy (the reference)
4. ``data/coco.py``       -- the COCO dataset, image selection, results rows and COCOeval
5. ``eval/pipeline.py``   -- the one evaluation loop over any ``eval/protocols.py`` backend
Everything in ``throughput/`` only makes it faster (lanes, loader processes, GPU kernels, replay) and plugs in
through the protocols; the core never imports it.

Rooms: ``core`` (errors, CLI wrapper, atomic writes, host facts), ``data``, ``model``, ``eval`` (protocols,
options, pipeline with its modes, timing and COCO feed, the evaluators' CLI edge), ``ort``, ``trt`` (API, builds,
runtime, doctor), ``gpu`` (CUDA memory, streams, events), ``quant``, ``report``, and the wing ``throughput``.
"""
