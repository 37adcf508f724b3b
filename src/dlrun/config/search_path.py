"""Where configs live: shipped ``conf/`` and ``experiments/``, plus the user's own in the working directory."""

from __future__ import annotations

import copy
import os
from functools import cache
from pathlib import Path
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from dlrun._upstream import hydra_config_header, hydra_list_add_result, hydra_normalize_config_name

PRESET_GROUP = "experiment"
CONFIG_NAME = "config"  # the primary config, conf/config.yaml


@cache
def shipped_dir(name: str) -> Path:
    """``conf`` or ``experiments``: inside the installed package, else at the source checkout's root."""
    packaged = Path(__file__).resolve().parents[1] / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / name


class PresetConfigSource(ConfigSource):
    """Serve a flat folder of presets (``experiments/*.yaml``) as the config group ``experiment``."""

    def __init__(self, provider: str, path: str) -> None:
        if "://" not in path:
            path = f"{self.scheme()}://{path}"
        super().__init__(provider=provider, path=path)

    @staticmethod
    def scheme() -> str:
        """URL scheme of search-path entries served by this source."""
        return "dlrun-presets"

    def _local(self, config_path: str) -> str | None:
        parts = config_path.strip("/").split("/", 1)
        if parts[0] != PRESET_GROUP:
            return None
        return os.path.join(self.path, parts[1] if len(parts) > 1 else "")

    def load_config(self, config_path: str) -> ConfigResult:
        """Load ``experiment/NAME.yaml`` from the presets folder."""
        local = self._local(hydra_normalize_config_name(config_path))
        with open(local, encoding="utf-8") as handle:
            header = hydra_config_header(handle.read(512))
            handle.seek(0)
            cfg = OmegaConf.load(handle)
        return ConfigResult(config=cfg, path=f"{self.scheme()}://{self.path}", provider=self.provider, header=header)

    def available(self) -> bool:
        """True when the folder exists."""
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        """The root and ``experiment`` are groups here."""
        if config_path.strip("/") == "":
            return self.available()
        local = self._local(config_path)
        return local is not None and os.path.isdir(local)

    def is_config(self, config_path: str) -> bool:
        """``experiment/NAME`` is a config when ``NAME.yaml`` exists."""
        local = self._local(hydra_normalize_config_name(config_path))
        return local is not None and os.path.isfile(local)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        """Names of presets in the folder."""
        local = self._local(config_path) if config_path.strip("/") else None
        files: list[str] = []
        if config_path.strip("/") == "":
            if results_filter in (None, ObjectType.GROUP) and self.available():
                files.append(PRESET_GROUP)
            return files
        if local is None or not os.path.isdir(local):
            return files
        for name in os.listdir(local):
            hydra_list_add_result(self, files, os.path.join(config_path, name), name, results_filter)
        return sorted(set(files))


def user_dirs(cwd: Path | None = None) -> dict[str, Path]:
    """The working directory's ``conf`` and ``experiments`` folders that exist (not the shipped ones)."""
    cwd = cwd or Path.cwd()
    found = {}
    for name in ("conf", "experiments"):
        folder = cwd / name
        if folder.is_dir() and folder.resolve() != shipped_dir(name).resolve():
            found[name] = folder.resolve()
    return found


class DlrunSearchPath(SearchPathPlugin):
    """The working directory's ``conf/`` and ``experiments/`` before the shipped ones; shipped presets after."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """User folders first, so a user's ``conf/model/mlp.yaml`` replaces the shipped ``mlp``."""
        user = user_dirs()
        search_path.append("dlrun", f"{PresetConfigSource.scheme()}://{shipped_dir('experiments')}")
        # Prepended in reverse: the user's presets end up second, the user's conf/ first of all.
        if "experiments" in user:
            search_path.prepend("dlrun-user", f"{PresetConfigSource.scheme()}://{user['experiments']}")
        if "conf" in user:
            search_path.prepend("dlrun-user", f"file://{user['conf']}")


def register() -> None:
    """Make Hydra aware of the preset source and dlrun's search path (idempotent)."""
    plugins = Plugins.instance()
    plugins.register(PresetConfigSource)
    plugins.register(DlrunSearchPath)
    share_config_store()


def share_config_store() -> None:
    """Stop Hydra from deep-copying its whole ConfigStore each time it copies the config repository.

    Hydra 1.3 copies the repository (``copy.deepcopy``) for every compose and for every group that
    ``--help`` lists; its structured-config source holds the ConfigStore singleton, which got copied
    too: with the sweeper/launcher plugins' configs, ~50 ms a copy and 107 copies for ``dlrun --help``.
    Copies now share the store, as on Hydra's main branch (facebookresearch/hydra#2928). Pickled
    sources (joblib workers) keep their own store as before.
    """
    from dlrun._upstream import hydra_structured_source

    source = hydra_structured_source()
    if source is None:
        return
    source.__deepcopy__ = _copy_sharing_store


def _copy_sharing_store(self: Any, memo: dict[int, Any]) -> Any:
    clone = copy.copy(self)
    for name, value in vars(self).items():
        if name != "store":
            setattr(clone, name, copy.deepcopy(value, memo))
    return clone


def user_options(cwd: Path | None = None) -> dict[str, set[str]]:
    """Options the working directory defines, per config group (``{"model": {"tiny"}, "experiment": {...}}``)."""
    user = user_dirs(cwd)
    options: dict[str, set[str]] = {}
    if "conf" in user:
        for path in user["conf"].rglob("*.yaml"):
            group = path.parent.relative_to(user["conf"]).as_posix()
            if group != ".":
                options.setdefault(group, set()).add(path.stem)
    if "experiments" in user:
        options[PRESET_GROUP] = {path.stem for path in user["experiments"].glob("*.yaml")}
    return options


def mark_user_options(help_text: str, cwd: Path | None = None) -> str:
    """Mark the user's options in ``dlrun --help``'s group list (``tiny*``) and say what the mark means."""
    options = user_options(cwd)
    if not options:
        return help_text
    lines = []
    for line in help_text.splitlines():
        group, sep, rest = line.partition(": ")
        if sep and group in options and rest and "=" not in rest:
            names = [name + ("*" if name in options[group] else "") for name in rest.split(", ")]
            line = f"{group}: {', '.join(names)}"
        elif line.startswith("Config groups"):
            line += "\n(* = yours, from ./conf or ./experiments; yours replace shipped options of the same name)"
        lines.append(line)
    return "\n".join(lines) + ("\n" if help_text.endswith("\n") else "")
