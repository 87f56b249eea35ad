"""The model bundle: ONNX graph, labels, preprocessing and rejection settings, model card."""

from fruitstream.model.bundle import ModelBundle, PreprocessConfig, default_bundle_dir

__all__ = ["ModelBundle", "PreprocessConfig", "default_bundle_dir"]
