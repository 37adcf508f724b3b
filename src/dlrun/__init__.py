"""dlrun: declarative deep-learning experiments: Hydra configs, Lightning training, MLflow records."""

__version__ = "0.1.0"
