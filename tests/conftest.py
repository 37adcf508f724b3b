"""Fixtures shared by the test files: the real MNIST files and their official contents; early jobs.

Two folders: ``unit/`` (no dlrun process, no dlrun task, no MLflow store or server, no training beyond a
Lightning loop over a few toy tensors: seconds in all) and ``e2e/`` (real trainings, ``dlrun`` processes,
in-process dlrun jobs, a real MLflow server). Every test under ``e2e/`` carries the ``e2e`` marker, so
``pytest -m 'not e2e'`` (or ``pytest tests/unit``) is the quick loop; the unit tests run first. ``helpers``,
``trained_runs`` and ``user_callbacks/`` stay here, beside this file, which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import helpers` under any import mode

from helpers import DATA, EARLY_JOBS, MNIST, MNIST_FILES, MULTI30K, MULTI30K_FILES, Started, early_key  # noqa: E402

E2E = Path(__file__).resolve().parent / "e2e"


def pytest_configure(config: pytest.Config) -> None:
    # MLflow's SQLAlchemy store trips a deprecation inside SQLAlchemy; it says nothing about dlrun.
    config.addinivalue_line("filterwarnings", "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.path.is_relative_to(E2E))  # unit tests first (a stable sort)


@pytest.fixture(scope="session", autouse=True)
def early_jobs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """The ``helpers.early`` jobs of the modules with a test selected, started with the session's first test."""
    modules = {
        item.module.__name__ for item in request.session.items if "early_result" in getattr(item, "fixturenames", ())
    }
    jobs = {key: job for key, job in EARLY_JOBS.items() if job.__module__ in modules}
    folders = {key: tmp_path_factory.mktemp(job.__name__) for key, job in jobs.items()}
    started = Started({key: functools.partial(job, folders[key]) for key, job in jobs.items()}, workers=1)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="session")
def early_result(early_jobs: Started) -> Callable[[Callable[[Path], Any]], Any]:
    """``early_result(job)``: what the module's ``helpers.early`` job returned, once it is done."""
    return lambda job: early_jobs[early_key(job)]


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
