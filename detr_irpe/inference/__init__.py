"""Inference on trained models: predictions of image files, drawing them, ONNX export."""
