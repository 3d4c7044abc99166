"""Read the Optuna studies of loaded experiments, from each sweep's own study database.

The database is the one the sweep used: ``search.optuna_storage`` of its ``config.yaml``
(PostgreSQL, MySQL, or an SQLite file), else ``optuna.db`` in the experiment directory. The saved
URL carries no password (``user:***@``): it comes from the environment as the database client
reads it (``PGPASSWORD`` or ``~/.pgpass``; ``MYSQL_PWD``), or from a URL given to
``python -m analysis --optuna-storage URL``. A database that cannot be reached or read is skipped
with a note saying why; only the experiment's own studies (their names carry its experiment id)
are read, each copied into memory.

Only reads: an SQLite file is opened read-only (``mode=ro``), every SQLite statement runs under a
time budget (``analysis._files.sqlite_budget``), and a database that runs out of it (a recursive
view, say) stops the analysis with :class:`AnalysisError` (exit 2) instead of hanging.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from analysis._files import (
    SQLITE_BUDGET_S,
    Unreadable,
    check_regular,
    read_bytes,
    redact_text,
    sqlite_budget,
)
from analysis.contract import MARKER, OPTUNA_DB, REDACTED
from analysis.load import AnalysisError, Results, _text

SQLITE_TIMEOUT_S = 5.0  # how long to wait for a sweep's write transaction on optuna.db
CONNECT_TIMEOUT_S = 10  # a database server that does not answer
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PASSWORD_ENV = {"postgresql": "PGPASSWORD", "mysql": "MYSQL_PWD"}


def readonly_sqlite_url(db: str | os.PathLike) -> str:
    """SQLAlchemy URL opening ``db`` read-only (SQLite URI ``mode=ro``): it is never created or
    written, whatever the reader does."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database="file:" + urllib.parse.quote(os.path.abspath(db)),
                      query={"mode": "ro", "uri": "true"}).render_as_string(hide_password=False)


def _check_sqlite_file(db: Path, inside: Path | None) -> None:
    check_regular(db, inside=inside)
    head = _head(db)
    if len(head) == 0:
        raise Unreadable("empty file")
    if head != _SQLITE_MAGIC:
        raise Unreadable("not an SQLite database")


def _head(db: Path) -> bytes:
    fd = os.open(db, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, len(_SQLITE_MAGIC))
    finally:
        os.close(fd)


def _read(url: str, backend: str, prefix: str | None, budget_s: float) -> dict[str, object]:
    """The studies (whose names start with ``prefix``) of the database at ``url``, in memory. Every
    SQLite connection runs under ``sqlite_budget``: a statement past the budget is interrupted."""
    import optuna
    from sqlalchemy import event

    connect_args = {"timeout": SQLITE_TIMEOUT_S} if backend == "sqlite" else \
        {"connect_timeout": CONNECT_TIMEOUT_S} if backend in ("postgresql", "mysql") else {}
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args},
                                         skip_compatibility_check=True, skip_table_creation=True)
    engine = storage.engine
    state = {"out": False}
    if backend == "sqlite":
        budget = sqlite_budget(budget_s, state)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):
            dbapi_connection.set_progress_handler(budget, 10_000)

        engine.dispose()  # any connection opened before the listener: closed, so none runs unbudgeted
    try:
        studies = {}
        for summary in optuna.study.get_all_study_summaries(storage, include_best_trial=False):
            if prefix is not None and not summary.study_name.startswith(prefix):
                continue
            memory = optuna.storages.InMemoryStorage()
            optuna.copy_study(from_study_name=summary.study_name, from_storage=storage, to_storage=memory)
            studies[summary.study_name] = optuna.load_study(study_name=summary.study_name, storage=memory)
        return studies
    except Exception:
        if state["out"]:
            raise AnalysisError(f"{redact_text(url)[:200]}: reading the Optuna studies took over "
                                f"{budget_s:g} s (a damaged or hostile database?); move it away or "
                                f"repair it") from None
        raise
    finally:
        storage.remove_session()
        engine.dispose()


def _study_prefix(name: str, path: Path) -> str | None:
    """``<experiment name>-<experiment id>-``: the names of this experiment's studies (sweeps.seeds),
    or None when the marker is absent (every study of the database is read)."""
    import json

    try:
        marker = json.loads(read_bytes(path / MARKER, 1 << 16, inside=path))
    except (Unreadable, ValueError):
        return None
    exp_id = marker.get("experiment_id") if isinstance(marker, dict) else None
    sweep = marker.get("name") if isinstance(marker, dict) else None
    if isinstance(exp_id, str) and isinstance(sweep, str):
        return f"{sweep}-{exp_id}-"
    return None


def _database(name: str, path: Path, meta: dict, given: str | None) -> tuple[str | None, str]:
    """(URL, how it is shown) of the experiment's study database, or (None, why not)."""
    from sqlalchemy.engine import make_url

    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    search = config.get("search") if isinstance(config.get("search"), dict) else {}
    saved = search.get("optuna_storage")
    if given:
        saved = given
    if not isinstance(saved, str) or not saved:
        return None, "local"
    try:
        parsed = make_url(saved)
    except Exception:
        return None, f"search.optuna_storage in {name}'s config.yaml is not a database URL"
    if parsed.password == REDACTED:
        parsed = parsed._replace(password=None)
        backend = parsed.get_backend_name()
        var = _PASSWORD_ENV.get(backend)
        if backend == "mysql" and os.environ.get("MYSQL_PWD"):
            parsed = parsed.set(password=os.environ["MYSQL_PWD"])
        elif backend != "postgresql" or not (os.environ.get(var or "") or os.path.isfile(
                os.environ.get("PGPASSFILE") or os.path.expanduser("~/.pgpass"))):
            return None, (f"its database password is not saved: set {var or 'the password'} (or "
                          f"~/.pgpass), or pass --optuna-storage URL")
    return parsed.render_as_string(hide_password=False), redact_text(saved)


def load_studies(results: Results, optuna_storage: str | None = None,
                 budget_s: float = SQLITE_BUDGET_S) -> dict[str, object]:
    """Optuna studies of the loaded experiments, keyed by study name, each copied into memory.

    ``optuna_storage`` (a database URL) replaces the one of every experiment's config.yaml. A
    database that cannot be read is skipped with a note in ``results.notes``; one that runs past
    ``budget_s`` raises AnalysisError."""
    import optuna
    from sqlalchemy.engine import make_url

    studies: dict[str, object] = {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" lines
    skip = "parameter importances are left out"
    try:
        for name, path in results.experiments.items():
            url, shown = _database(name, Path(path), (results.meta or {}).get(name) or {}, optuna_storage)
            if url is None and shown != "local":
                results.notes.append(f"`{name}`: cannot read its Optuna studies: {shown}; {skip}")
                continue
            if url is None:
                db = Path(path) / OPTUNA_DB
                if not (db.exists() or db.is_symlink()):
                    continue
                try:
                    _check_sqlite_file(db, inside=Path(path))
                except Unreadable as exc:
                    results.notes.append(f"{_text(db)}: {exc}; {skip}")
                    continue
                url, shown = readonly_sqlite_url(db), _text(db)
            try:
                backend = make_url(url).get_backend_name()
                studies.update(_read(url, backend, _study_prefix(name, Path(path)), budget_s))
            except AnalysisError:
                raise
            except Exception as exc:  # driver/SQLAlchemy/Optuna errors: unreachable, corrupt, locked
                chain = []
                while exc is not None and len(chain) < 10:  # Optuna wraps the driver's error
                    chain.append(exc)
                    exc = exc.__cause__ or exc.__context__
                first = _text(redact_text(str(chain[-1]))).strip()[:120]
                reason = "locked by a writer (a running sweep?); rerun later" \
                    if any("database is locked" in str(e) for e in chain) \
                    else f"could not be read ({chain[-1].__class__.__name__}: {first})"
                results.notes.append(f"{_text(shown)}: {reason}; {skip}")
    finally:
        optuna.logging.set_verbosity(verbosity)
    return studies
