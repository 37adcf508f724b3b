"""dlrun: declarative deep-learning experiments: Hydra configs, Lightning training, MLflow records."""

__version__ = "0.1.0"

# The Python API, imported on first use so that `import dlrun` (and `dlrun --help`) stays light.
_LAZY = {"run": "dlrun.api", "load": "dlrun.api", "Loaded": "dlrun.api", "inspect": "dlrun.models.inspection"}


def __getattr__(name: str):  # noqa: ANN202 - module-level lazy attributes (PEP 562)
    """``dlrun.run``, ``dlrun.load`` (``dlrun.api``) and ``dlrun.inspect``: imported when first touched."""
    if name not in _LAZY:
        raise AttributeError(f"module 'dlrun' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_LAZY[name])
    return module if name == "inspect" else getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
