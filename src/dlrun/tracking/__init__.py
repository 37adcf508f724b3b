"""Bookkeeping: MLflow stores, run lifecycle, params, tags and artifacts."""
