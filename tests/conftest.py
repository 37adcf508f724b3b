"""Fixtures shared by the test files: the real MNIST files and their official contents."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import helpers` under any import mode

from helpers import DATA, MNIST, MNIST_FILES, MULTI30K, MULTI30K_FILES  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # MLflow's SQLAlchemy store trips a deprecation inside SQLAlchemy; it says nothing about dlrun.
    config.addinivalue_line("filterwarnings", "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder with the four original MNIST .gz files (``$DLRUN_DATA_DIR/mnist`` or ../shared/data/mnist)."""
    missing = [name for name in MNIST_FILES if not (MNIST / name).is_file()]
    if missing:
        pytest.fail(f"real MNIST needed: {', '.join(missing)} missing in {MNIST} (set DLRUN_DATA_DIR)")
    return MNIST


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """Folder with the six Multi30k .gz files (``$DLRUN_DATA_DIR/multi30k``); missing files fail, as MNIST's do."""
    missing = [name for name in MULTI30K_FILES if not (MULTI30K / name).is_file()]
    if missing:
        pytest.fail(f"real Multi30k needed: {', '.join(missing)} missing in {MULTI30K} (set DLRUN_DATA_DIR)")
    return MULTI30K


@pytest.fixture(scope="session")
def official(mnist_dir: Path) -> dict:
    """The official arrays, read once: ``train_images``, ``train_labels``, ``test_images``, ``test_labels``."""
    from dlrun.data.idx import read_idx

    return {
        f"{prefix}_{kind}": read_idx(mnist_dir / f"{stem}-{kind}-idx{dim}-ubyte.gz")
        for prefix, stem in (("train", "train"), ("test", "t10k"))
        for kind, dim in (("images", 3), ("labels", 1))
    }


@pytest.fixture(scope="session")
def data_root(mnist_dir: Path) -> Path:
    """What ``paths.data_dir`` / ``MNISTDataModule(data_dir=...)`` take: the folder holding ``mnist/``."""
    return DATA
