"""Backend adapters, one module per backend, each implementing the ports in ``ports``."""
