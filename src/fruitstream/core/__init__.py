"""The classifier core: image bytes to predictions, and how well they hold up. No backend,
no pipeline, no entrypoint is imported here."""
