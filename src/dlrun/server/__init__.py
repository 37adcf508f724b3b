"""``dlrun server``: a team's MLflow tracking server (database backend, artifacts over HTTP, basic-auth logins)."""
