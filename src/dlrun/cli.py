"""``dlrun``: the Hydra entry point. Known failures become one line on stderr and a non-zero exit.

Lightning and MLflow are imported only once a task runs, so ``dlrun --help`` stays fast.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from dlrun.errors import ConfigError, RunInterrupted, TrialPruned, UserError, one_line, raise_interrupt

# A job's failure, kept here instead of raised inside Hydra (whose job runner would add its own report).
_failures: list[BaseException] = []


def _task(cfg: Any) -> Any:
    from dlrun.tasks import run_task

    try:
        return run_task(cfg)
    except BaseException as err:  # noqa: BLE001 - re-raised by main() once Hydra is done
        if isinstance(err, TrialPruned):  # stopped early by a search's pruner: an outcome, not a failure
            from dlrun.sweeping.outcomes import JobPruned

            return JobPruned(err.epoch, err.value)
        _failures.append(err)
        if isinstance(err, (KeyboardInterrupt, RunInterrupted)):
            raise  # Ctrl-C / SIGTERM stops the whole sweep, not just this job
        from dlrun.sweeping.outcomes import JobFailed

        # Sweep jobs in other processes (joblib, SLURM) report failure through this return value.
        return JobFailed.of(err)


# `dlrun NAME ...` commands beside the Hydra entry point: module and function, imported only when named.
SUBCOMMANDS = {
    "runs": ("dlrun.browse.commands", "runs_main"),
    "ui": ("dlrun.browse.ui", "ui_main"),
    "init": ("dlrun.starter", "init_main"),
    "rerun": ("dlrun.tasks.rerun", "rerun_main"),
    "server": ("dlrun.server.command", "server_main"),
}


def _subcommand(argv: list[str]) -> int | None:
    """Run ``dlrun runs|ui|init|rerun|server ...`` and return its exit code; None when argv is a Hydra command line."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    import importlib

    module, function = SUBCOMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)


def main() -> None:
    """Console script: run a subcommand, or Hydra on ``sys.argv``, and exit with dlrun's codes."""
    if sys.argv[1:] in (["--version"], ["-V"]):  # Hydra's own --version would print Hydra's
        import dlrun

        print(f"dlrun {dlrun.__version__}")
        sys.exit(0)
    from dlrun.config.user_code import make_importable

    make_importable()  # the user's models and data modules, by _target_, here and in every child process
    try:
        code = _subcommand(sys.argv[1:])
    except BrokenPipeError:  # `dlrun runs | head`: the reader left, nothing to report
        _quiet_stdout()
        sys.exit(0)
    if code is not None:
        sys.exit(code)
    import hydra

    from dlrun.config.search_path import CONFIG_NAME, register, shipped_dir

    show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Let failures reach us instead of Hydra's multi-line report; we print one line (or re-raise).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    register()
    entry = hydra.main(config_path=str(shipped_dir("conf")), config_name=CONFIG_NAME, version_base="1.3")(_task)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupt)
    try:
        check_argument_sizes(sys.argv[1:])
        if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
            _help(entry)
            return
        from dlrun.config.cross_validation import expand_folds

        sys.argv[1:] = expand_folds(sys.argv[1:])  # cv.folds=K: a sweep over the K folds, checked before it opens
        entry()
        from dlrun.sweeping import bookkeeping as sweep

        if sweep.failure is not None or _failures:  # a sweep's summary of its failed jobs comes first
            raise sweep.failure or _failures[0]
    except SystemExit:
        raise
    except BrokenPipeError:  # `dlrun --help | head`: the reader left, nothing to report
        _quiet_stdout()
        sys.exit(0)
    except BaseException as err:  # noqa: BLE001 - every failure gets one line and a code
        if show_traceback:
            raise
        code, line = describe_error(err, sys.argv[1:])
        print(f"dlrun: error: {one_line(line)}", file=sys.stderr, flush=True)
        sys.exit(code)


MAX_KEY = 200  # far beyond any config key; a longer one would reach the file system as a config file name
MAX_NUMBER_DIGITS = 4000  # Python refuses to convert integers of more than 4300 digits


def check_argument_sizes(argv: list[str]) -> None:
    """Refuse absurdly long keys and numbers before Hydra turns them into file names or int conversions."""
    for arg in argv:
        if arg.startswith("-"):
            continue
        key, _, value = arg.partition("=")
        if len(key) > MAX_KEY:
            raise ConfigError(f"{key[:40]}...: a key of {len(key)} characters is no config key")
        digits = sum(ch.isdigit() for ch in value)
        if digits > MAX_NUMBER_DIGITS and re.fullmatch(r"[-+]?[\d_]+(\.[\d_]*)?([eE][-+]?\d+)?", value):
            raise ConfigError(f"{key}: a value of {digits} digits is no number dlrun can use")


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: Python's final flush would raise BrokenPipeError again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _help(entry: Any) -> None:
    """Hydra's ``--help``, with the options from the working directory's conf/ and experiments/ marked."""
    import contextlib
    import io

    from dlrun.config.search_path import mark_user_options

    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            entry()  # Hydra ends --help with sys.exit(0)
    finally:
        sys.stdout.write(mark_user_options(text.getvalue()))


def describe_error(err: BaseException, argv: list[str]) -> tuple[int, str]:
    """Exit code and one line for any failure, naming the key, file or line at fault where known."""
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, RunInterrupted):
        return err.exit_code, f"{err}; the run was marked KILLED"
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted"
    if type(err).__name__ == "InstantiationException" and isinstance(err.__cause__, UserError):
        err = err.__cause__  # Hydra's "Error in call to target ..." around a check of ours: our line alone
    if isinstance(err, UserError):
        return err.exit_code, one_line(str(err))
    if isinstance(err, OverrideParseException):
        return 2, f"{_unparsable(argv)}: cannot parse this override ({one_line(str(err))})"
    if isinstance(err, HydraException):
        return 2, _hydra_message(err, argv)
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if key and type(err).__name__ == "MissingMandatoryValue":
            return 2, f"{key}: missing mandatory value (set {key}=...)"
        return 2, f"{key}: {first}" if key and key not in first else first
    if type(err).__name__ == "MisconfigurationException":
        return 2, f"trainer: {one_line(str(err))}"
    if isinstance(err, OSError) and err.filename:
        return _path_error(err, argv)
    if type(err).__name__ == "MlflowException":
        return 1, f"tracking.uri: MLflow store error: {one_line(str(err).splitlines()[0] if str(err) else '')[:300]}"
    cause = f"{type(err).__name__}: {one_line(str(err))}"
    return 1, f"{cause} (set HYDRA_FULL_ERROR=1 for the traceback)"


def _unparsable(argv: list[str]) -> str:
    """The first command-line override Hydra's grammar refuses (the parser's own message does not name it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - any refusal marks the culprit
            return arg
    return "overrides"


def _path_error(err: OSError, argv: list[str]) -> tuple[int, str]:
    """A file or folder that cannot be made or written: name the key whose value holds it, and the path."""
    path = os.path.abspath(str(err.filename))
    reason = err.strerror or type(err).__name__
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        value = value.removeprefix("sqlite:///").strip("'\"")
        if sep and value and _is_within(path, os.path.abspath(value)):
            return 2, f"{key}: cannot write {path} ({reason})"
    cwd = os.getcwd()
    for key, folder in (("hydra.run.dir", "outputs"), ("hydra.sweep.dir", "multirun")):
        if _is_within(path, os.path.join(cwd, folder)):  # the default output folders
            return 2, f"{key}: cannot write {path} ({reason})"
    return 1, f"{path}: {reason}"


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep) or folder.startswith(path + os.sep)


def _hydra_message(err: BaseException, argv: list[str]) -> str:
    text = str(err)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        hint = _did_you_mean(option, options, f"{group}=")
        allowed = f"; available: {', '.join(options)}" if options else ""
        return f"{group}={option}: no such {group}{hint}{allowed}"
    pattern = r"(?:In '([^']+)': )?ConfigKeyError.*?Key '([^']+)' not in '([^']+)'.*?full_key: (\S+)"
    misplaced = re.search(pattern, text, re.S)
    if misplaced:
        source, _, node, key = misplaced.groups()
        where = f" (set in {source})" if source else ""
        return f"{key}: unknown key: {node} has no such setting{where}"
    not_loaded = re.search(r"Could not load '([^'/]+)/([^']+)'", text)  # one option of a list (callbacks=[a,b])
    if not_loaded:
        group, option = not_loaded.groups()
        options = _group_options(group)
        hint = _did_you_mean(option, options, "")
        return f"{group}: no such option {option!r}{hint}; available: {', '.join(options)}"
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        if any(a in ("task=eval", "task=predict") for a in argv) or any(
            a.startswith(("ckpt=", "resume=")) for a in argv
        ):
            # The command line is composed before the checkpoint is read: its groups must be named to reach their keys.
            return (
                f"{key}: not a key of the default config; to change a key of the checkpoint's config, name its "
                f"groups too (e.g. data=... model=...) or write +{key}=..."
            )
        return f"{key}: unknown key{_known_keys_hint(key, argv)}"
    cause = err.__cause__
    if cause is not None and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(cause).splitlines()[0]}"
    return one_line(text.split("\nConfig search path")[0])


def _group_options(group: str) -> list[str]:
    """The options of a config group: dlrun's own and those in the working directory's conf/."""
    from dlrun.config.search_path import shipped_dir

    folders = (shipped_dir("conf") / group, Path.cwd() / "conf" / group)
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})


def _did_you_mean(name: str, candidates: list[str], prefix: str) -> str:
    """`` (did you mean PREFIXNAME?)`` for the closest candidate, or nothing when none is close."""
    import difflib

    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _known_keys_hint(key: str, argv: list[str]) -> str:
    """Compose again without the offending override to list the keys that do exist beside it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    from dlrun.config.search_path import CONFIG_NAME, shipped_dir

    parent, _, name = key.rpartition(".")
    overrides = [a for a in argv if not a.startswith("-") and a.split("=", 1)[0].lstrip("+~") != key]
    try:
        with initialize_config_dir(str(shipped_dir("conf")), version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=overrides)
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:  # the hint is a courtesy; the error line stands without it
        return ""
    if not isinstance(node, DictConfig):
        return ""
    keys = [str(k) for k in node.keys()]
    hint = _did_you_mean(name, keys, f"{parent}." if parent else "")
    return f"{hint}; keys in {parent or 'the config'}: {', '.join(keys)}; use +{key}=... to add a new one"
