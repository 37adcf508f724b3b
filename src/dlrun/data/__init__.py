"""Generating inputs: datasets, readers and batch samplers (no knowledge of models)."""
