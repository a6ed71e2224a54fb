"""YOLOv10 output layouts with the NumPy decode + NMS reference, and facts read from an ONNX file."""
