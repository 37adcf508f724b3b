"""Logins: MLflow's basic-auth app, its user store in the server's folder, and passwords (never a default)."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from dlrun.errors import ConfigError

ADMIN = "admin"
ADMIN_PASSWORD_ENV = "DLRUN_SERVER_ADMIN_PASSWORD"
USER_PASSWORD_ENV = "DLRUN_SERVER_USER_PASSWORD"
MIN_PASSWORD = 12  # MLflow's own rule for basic-auth passwords
CONFIG_FILE = "auth.ini"
USERS_FILE = "users.db"
SECRET_FILE = "flask_secret"
# Every logged-in user may read and log to every experiment (a team shares "mnist"); deleting runs and
# granting permissions stay with an experiment's creator (MANAGE) and the admin.
DEFAULT_PERMISSION = "EDIT"


def check_installed() -> None:
    """ConfigError in one line when MLflow's basic-auth app cannot start here (it needs Flask-WTF)."""
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise ConfigError("logins: MLflow's basic-auth app needs the Flask-WTF package (pip install 'dlrun[server]')")


def write_config(folder: Path) -> Path:
    """Write (or rewrite) the basic-auth app's configuration in ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    path.write_text(
        "# Written by dlrun server: MLflow's basic-auth app (MLFLOW_AUTH_CONFIG_PATH points here).\n"
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = sqlite:///{folder.resolve() / USERS_FILE}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        encoding="utf-8",
    )
    return path


def secret_key(folder: Path) -> str:
    """The Flask secret for CSRF tokens, the same in every worker and across restarts: made once, kept in
    ``folder`` readable by its owner only (``MLFLOW_FLASK_SERVER_SECRET_KEY`` still wins)."""
    import secrets

    given = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
    if given:
        return given
    path = folder / SECRET_FILE
    if not path.is_file():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
    return path.read_text(encoding="utf-8").strip()


def has_users(folder: Path) -> bool:
    """True once the user store exists (the admin was created at the first start)."""
    return (folder / USERS_FILE).is_file()


def password(env: str, what: str) -> str:
    """A password from the environment variable ``env``, else typed twice at a terminal; checked for length."""
    typed = os.environ.get(env)
    if typed is None:
        if not sys.stdin.isatty():
            raise ConfigError(f"{env}: not set; give {what} a password in it (or run this at a terminal)")
        typed = getpass.getpass(f"password for {what}: ")
        if getpass.getpass("again: ") != typed:
            raise ConfigError(f"{what}: the two passwords differ")
    if len(typed) < MIN_PASSWORD:
        raise ConfigError(f"{env}: a password of at least {MIN_PASSWORD} characters, please (MLflow's rule)")
    return typed


def add_user(folder: Path, name: str, secret: str, admin: bool = False) -> None:
    """Create user ``name`` in the server's user store (the server need not run); ConfigError if it exists."""
    if not has_users(folder):
        raise ConfigError(f"--dir {folder}: no user store here; start `dlrun server --dir {folder}` once first")
    import warnings

    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(folder / CONFIG_FILE)  # read when MLflow's auth app is imported
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():  # importing the auth app imports MLflow's server and its deprecation notes
        warnings.simplefilter("ignore")
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{folder.resolve() / USERS_FILE}")
    if store.has_user(name):
        raise ConfigError(f"user {name}: already exists in {folder / USERS_FILE}")
    try:
        store.create_user(name, secret, is_admin=admin)
    except MlflowException as err:
        raise ConfigError(f"user {name}: {err.message}") from None
