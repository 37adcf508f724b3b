"""``dlrun server``'s rules that need no server: loopback hosts, Host headers, client URLs, database URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrun.errors import ConfigError
from dlrun.server.backend import backend_url, optuna_storage, redacted
from dlrun.server.hosts import allowed_hosts, client_url, is_loopback, local_url, served_names


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False),
     ("10.1.2.3", False), ("192.168.0.7", False)],
)  # fmt: skip
def test_only_loopback_hosts_count_as_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_allowed_hosts_name_each_address_bare_and_with_the_port() -> None:
    assert allowed_hosts(["127.0.0.2"], 5055) == ["127.0.0.2", "127.0.0.2:5055"]
    assert allowed_hosts(["gpu1", "10.0.0.7", "gpu1"], 80) == ["gpu1", "gpu1:80", "10.0.0.7", "10.0.0.7:80"]


def test_a_server_on_every_interface_names_this_machine_not_loopback() -> None:
    names = served_names("0.0.0.0")
    assert "127.0.0.1" in names and "localhost" in names  # this machine's own users
    url = client_url("0.0.0.0", 5000, names)
    assert url.endswith(":5000") and "127.0.0.1" not in url and "0.0.0.0" not in url
    assert client_url("127.0.0.2", 5000) == "http://127.0.0.2:5000"
    assert local_url("0.0.0.0", 5000) == "http://127.0.0.1:5000" and local_url("::", 1) == "http://[::1]:1"


def test_database_urls_are_checked_and_passwords_never_shown(tmp_path: Path) -> None:
    assert backend_url(None, tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert redacted("postgresql://ana:s3cret@db:5432/mlflow") == "postgresql://ana:***@db:5432/mlflow"
    assert redacted("postgresql://ana@db/mlflow") == "postgresql://ana@db/mlflow"
    with pytest.raises(ConfigError, match=r"^--backend-store-uri file:///x: not a database URL"):
        backend_url("file:///x", tmp_path)
    with pytest.raises(ConfigError, match=r"ana:\*\*\*@db/m: needs the MySQLdb package"):
        backend_url("mysql://ana:s3cret@db/m", tmp_path)
    assert optuna_storage("postgresql://a@db/m") == "postgresql://a@db/m?options=-csearch_path%3Doptuna"
    assert optuna_storage("postgresql://a@db/m?sslmode=require").endswith(
        "?sslmode=require&options=-csearch_path%3Doptuna"
    )
    assert optuna_storage(f"sqlite:///{tmp_path}/m.db") is None
