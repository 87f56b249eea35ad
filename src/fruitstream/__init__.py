"""fruitstream: recognize fruit in photos, one at a time or through a batch pipeline."""

__version__ = "0.1.0"
