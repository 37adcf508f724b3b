"""The server's database: a URL checked (scheme, driver installed, database answering) before MLflow starts."""

from __future__ import annotations

from pathlib import Path

from dlrun.errors import ConfigError, UserError, one_line

DIALECTS = ("postgresql", "mysql", "mssql")  # the databases MLflow's SQL store runs on besides SQLite
# Optuna's tables live beside MLflow's in a schema of their own: both keep their migrations in a table named
# alembic_version, and Optuna refuses a database whose alembic_version is MLflow's.
OPTUNA_SCHEMA = "optuna"


def backend_url(url: str | None, folder: Path) -> str:
    """An absolute database URL: ``url`` (a SQLite path made absolute), or ``sqlite:///FOLDER/mlflow.db``."""
    if not url:
        return f"sqlite:///{folder / 'mlflow.db'}"
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return f"sqlite:///{path if path.is_absolute() else Path.cwd() / path}"
    dialect = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if dialect not in DIALECTS:
        raise ConfigError(
            f"--backend-store-uri {redacted(url)}: not a database URL dlrun server takes; use "
            "postgresql://USER:PASSWORD@HOST/DB (a team) or sqlite:///PATH.db (one person)"
        )
    import sqlalchemy

    try:  # the driver SQLAlchemy picks for this URL (postgresql:// -> psycopg 3 in SQLAlchemy 2.1)
        sqlalchemy.engine.make_url(url).get_dialect().import_dbapi()
    except ImportError as err:
        hint = " (pip install 'dlrun[server]')" if dialect == "postgresql" else ""
        raise ConfigError(f"--backend-store-uri {redacted(url)}: needs the {err.name} package{hint}") from None
    except Exception as err:  # noqa: BLE001 - an unknown driver name after '+'
        raise ConfigError(f"--backend-store-uri {redacted(url)}: {one_line(str(err))}") from None
    return url


def check_database(url: str) -> None:
    """UserError in one line when the database does not answer (wrong host, password or name)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
            if url.startswith("postgresql"):
                connection.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
    except Exception as err:  # noqa: BLE001 - every driver has its own error types
        message = one_line(str(getattr(err, "orig", None) or err)).split(" (Background on")[0]
        raise UserError(
            f"--backend-store-uri {redacted(url)}: the database does not answer ({message[:300]})"
        ) from None
    finally:
        engine.dispose()


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    scheme, sep, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{place}"


def optuna_storage(url: str) -> str | None:
    """The Optuna storage URL for studies on the same PostgreSQL database (its own schema); None otherwise."""
    if not url.startswith("postgresql"):
        return None
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{OPTUNA_SCHEMA}"
