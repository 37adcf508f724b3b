"""Looking at runs from the terminal: ``dlrun runs`` (list, show, diff, plot) and ``dlrun ui``.

Nothing here imports Lightning, and the plain listing of a SQLite store does not import MLflow either
(see ``sqlite_reader.py`` for why), so the commands answer in well under 1.5 s.
"""
