"""Training the classifier (extra ``train``: torch, onnx, EfficientNet-Lite0 weights)."""
