"""Building networks: plain torch modules, free of Lightning, Hydra and MLflow."""
