"""``cv.folds=K`` on the command line: the same command as a sweep over ``cv.fold=0..K-1``, checked first.

Each fold is an ordinary job of an ordinary sweep (any launcher; one MLflow parent, K children), so the
folds' mean ± std comes from the sweep summary that seeds use too (``dlrun.sweeping.seed_stats``). A grid
over other keys (``-m model=mlp,cnn cv.folds=5``) runs every configuration on every fold; an Optuna
search runs each trial as K fold jobs (``dlrun.sweeping.sweeper``).
"""

from __future__ import annotations

from omegaconf import DictConfig

from dlrun.errors import ConfigError

FOLDS_KEY = "cv.folds"
FOLD_KEY = "cv.fold"
MULTIRUN_FLAGS = ("-m", "--multirun")
# Hydra's flags that show the config (or Hydra's) instead of running: the command line stays as typed.
SHOW_FLAGS = ("--cfg", "-c", "--info", "-i", "--resolve", "--shell-completion", "-sc", "--hydra-help")


def key_of(argument: str) -> str:
    """The config key an override names (``+cv.folds=3`` -> ``cv.folds``); '' for flags."""
    return "" if argument.startswith("-") else argument.split("=", 1)[0].lstrip("+~")


def folds_argument(argv: list[str]) -> int | None:
    """K of the last ``cv.folds=K`` on the command line (None: absent or null), refused unless a whole number >= 2."""
    values = [a.split("=", 1)[1] for a in argv if key_of(a) == FOLDS_KEY and "=" in a]
    if not values or values[-1].strip().lower() in ("null", "none", ""):
        return None
    return check_folds(values[-1])


def check_folds(value: object) -> int:
    """``cv.folds`` as an int >= 2, else one line naming the key."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.lstrip("+").isdigit():
        raise ConfigError(f"{FOLDS_KEY}: expected one whole number of folds >= 2, got {text!r}")
    folds = int(text)
    if folds < 2:
        raise ConfigError(f"{FOLDS_KEY}: {folds} fold{'s' if folds != 1 else ''} cannot cross-validate; use 2 or more")
    return folds


def expand_folds(argv: list[str]) -> list[str]:
    """``argv`` as a sweep over the folds when it says ``cv.folds=K``: ``--multirun`` and ``cv.fold=0,...,K-1``
    added (a ``cv.fold=`` of the user's own is kept: ``cv.fold=2`` reruns one fold); otherwise ``argv`` itself.

    The command's ``cv`` keys and data module are checked first: a bad one stops it before any run opens."""
    folds = folds_argument(argv)
    if folds is None or any(a.split("=", 1)[0] in SHOW_FLAGS for a in argv):
        return argv
    check_before_sweep(argv)
    return fold_sweep(argv, folds)


def fold_sweep(argv: list[str], folds: int) -> list[str]:
    """``argv`` (holding ``cv.folds=K``) with ``--multirun`` and ``cv.fold=0,...,K-1`` unless already there."""
    expanded = list(argv)
    if not any(key_of(a) == FOLD_KEY for a in argv):  # beside cv.folds: overrides stay together for Hydra's parser
        at = max(i for i, a in enumerate(argv) if key_of(a) == FOLDS_KEY)
        expanded.insert(at + 1, f"{FOLD_KEY}={','.join(str(i) for i in range(folds))}")
    return expanded if any(a in MULTIRUN_FLAGS for a in argv) else ["--multirun", *expanded]


def check_cv(cfg: DictConfig, data_cls: object) -> None:
    """A job's ``cv`` keys: ``folds`` >= 2 with a ``fold`` in 0..folds-1, a whole ``seed``, and a data module
    that exposes its training set (``dlrun.contracts.DataModule.training_labels``/``use_fold``)."""
    from dlrun.contracts import check_cross_validation

    cv = cfg.get("cv") or {}
    folds, fold, seed = cv.get("folds"), cv.get("fold"), cv.get("seed", 0)
    if folds is None:
        if fold is not None:
            raise ConfigError(f"{FOLD_KEY}: set without {FOLDS_KEY}=K (how many folds the training set is cut into)")
        return
    folds = check_folds(folds)
    if fold is None:
        raise ConfigError(
            f"{FOLDS_KEY}={folds}: runs one job per fold; give it on the command line (dlrun {FOLDS_KEY}={folds} ...) "
            f"or sweep {FOLD_KEY}=0,...,{folds - 1} yourself"
        )
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ConfigError(f"{FOLD_KEY}: expected a fold in 0..{folds - 1}, got {fold!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"cv.seed: expected a whole number, got {seed!r}")
    check_cross_validation(data_cls, FOLDS_KEY)


def check_before_sweep(argv: list[str]) -> None:
    """The ``cv`` keys and the data module of ``argv`` (swept keys aside), before the sweep opens its parent run.

    Composed like the jobs will be, with fold 0; what cannot be composed here is left to Hydra and the jobs
    (each checks its own config before its run opens).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dlrun.config.build import locate
    from dlrun.config.search_path import CONFIG_NAME, shipped_dir
    from dlrun.errors import UserError

    arguments = [a for a in argv if not a.startswith("-") and key_of(a) != FOLD_KEY]
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        pairs = zip(arguments, parsed, strict=True)
        fixed = [a for a, o in pairs if not o.is_sweep_override() and not o.is_hydra_override()]
        with initialize_config_dir(str(shipped_dir("conf")), version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=[*fixed, f"{FOLD_KEY}=0"])
        data_cls = locate(str(cfg.data._target_), "data._target_")  # the class only: paths may need the job
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - Hydra says what is wrong with the command line, with its own line
        return
    check_cv(cfg, data_cls)
