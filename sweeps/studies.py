"""The Optuna study database: its URL checked before anything starts, the storage every study
uses (a pickle of it holds no password), and the deletion of an experiment's own studies.

The database is ``optuna.db`` (SQLite) in the experiment directory, or ``search.optuna_storage``
(PostgreSQL, MySQL) shared by many experiments; each study's name carries its experiment id.

The password is given once: in the URL on the command line (``export_password`` moves it into the
driver's ``PGPASSWORD`` / ``MYSQL_PWD``, which the database clients read), or in the environment or
``~/.pgpass`` from the start. Nothing keeps it in module state, and nothing written holds it: Tune
pickles the searcher's storage with the URL's password left out, and a resumed run's unpickled
storage connects with the environment's password.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analysis.contract import OPTUNA_DB
from sweeps.config import ConfigError, SweepConfig, show
from sweeps.experiment import Experiment, check_storage_path, redact
from sweeps.seeds import study_name

# The environment variable each backend's client reads its password from: libpq (psycopg) reads
# PGPASSWORD (or ~/.pgpass); for MySQL, PasswordlessRDBStorage puts MYSQL_PWD (the MySQL clients'
# own variable) back into the URL when it is unpickled.
PASSWORD_ENV = {"postgresql": "PGPASSWORD", "mysql": "MYSQL_PWD"}


def _url(url: str):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise ConfigError(f"search.optuna_storage: {show(redact(url))} is not a database URL; use e.g. "
                          f"postgresql+psycopg://user@host/db or sqlite:///path/optuna.db") from None


def without_password(url: str) -> str:
    """The URL with its password left out (not masked): what a pickle or a log may hold."""
    parsed = _url(url)
    if parsed.password is None:
        return url
    return parsed._replace(password=None).render_as_string(hide_password=False)


def has_env_password(url: str) -> bool:
    """Whether this backend's client finds a password without the URL: its environment variable is
    set, or (PostgreSQL) a password file exists."""
    backend = _url(url).get_backend_name()
    if os.environ.get(PASSWORD_ENV.get(backend, "\0")):
        return True
    if backend == "postgresql":
        passfile = os.environ.get("PGPASSFILE") or os.path.expanduser("~/.pgpass")
        return os.path.isfile(passfile)
    return False


def export_password(url: str | None) -> str | None:
    """Pass the secret once: move the URL's password into the driver's environment variable of its
    backend (``PASSWORD_ENV``), where the client, and a resumed run's unpickled storage, find it.
    Returns the URL unchanged (the caller keeps it for this run). A password for a backend without
    such a variable is refused (exit 2): a resumed run could not connect."""
    if not url:
        return url
    parsed = _url(url)
    if parsed.password is None:
        return url
    var = PASSWORD_ENV.get(parsed.get_backend_name())
    if parsed.get_backend_name() == "sqlite":
        return url  # refused by check_database_url: SQLite has no users
    if var is None:
        raise ConfigError(f"search.optuna_storage: a password in a {parsed.get_backend_name()} URL cannot "
                          f"be kept out of the sweep's files; use PostgreSQL or MySQL")
    os.environ[var] = str(parsed.password)
    return url


def check_database_url(url: str) -> None:
    """Parse a SQLAlchemy URL and import its driver, so a typo fails before anything starts."""
    from sqlalchemy.exc import NoSuchModuleError

    shown = show(redact(url), 200)
    parsed = _url(url)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(f"search.optuna_storage: unknown database '{parsed.drivername}'; use "
                          f"postgresql+psycopg://, mysql+pymysql:// or sqlite://") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        hint = " (psycopg 3: postgresql+psycopg://...; pip install 'selu-sweep[cluster]')" \
            if parsed.get_backend_name() == "postgresql" else ""
        raise ConfigError(f"search.optuna_storage: the driver of '{parsed.drivername}' is not "
                          f"installed{hint}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.username or parsed.password is not None or parsed.host:
            raise ConfigError(f"search.optuna_storage: {shown} names a user or host, which SQLite has "
                              f"not; use sqlite:////absolute/path/optuna.db")
        if parsed.database not in (None, "", ":memory:"):
            check_storage_path(str(Path(parsed.database).parent))
        return
    from sqlalchemy import create_engine, text

    timeout = {"postgresql": {"connect_timeout": 10}, "mysql": {"connect_timeout": 10}}
    try:
        engine = create_engine(parsed, connect_args=timeout.get(parsed.get_backend_name(), {}))
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # the driver's own errors: refused, timeout, auth, unknown database
        first = str(getattr(exc, "orig", exc)).strip().splitlines()
        why = (first[0] if first else exc.__class__.__name__).replace(parsed.password or "\0", "***")
        raise ConfigError(f"search.optuna_storage: cannot connect to {shown} ({why[:160]}); check the "
                          f"host, port, user and password") from None


def check_study_database(url: str) -> None:
    """An existing SQLite study database must open (a damaged one is exit 2 on --resume, not a crash)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or not Path(parsed.database).exists():
        return
    import optuna

    try:
        optuna.study.get_all_study_summaries(optuna_storage(url))
    except Exception as exc:
        why = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise ConfigError(f"{parsed.database}: not a readable Optuna database ({(why or ['?'])[0][:120]}); "
                          f"restore it, or start a new sweep with --name") from None


def optuna_storage(url: str):
    """An Optuna RDBStorage; SQLite waits for a busy database instead of failing after 5 s.

    A URL with a password gets a storage that pickles without it (Tune pickles the searcher into
    the experiment); loading such a pickle then needs this project, and the password from the
    environment (``export_password``). Any other URL gets Optuna's own class, so Ray's loaders read
    the experiment without the project installed."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    if without_password(url) == url:
        return optuna.storages.RDBStorage(url, **kwargs)
    return __getattr__("PasswordlessRDBStorage")(url, **kwargs)


def _passwordless_rdb_storage():
    import optuna

    class PasswordlessRDBStorage(optuna.storages.RDBStorage):
        """Tune pickles the searcher, and so its storage, into the experiment directory (tuner.pkl,
        searcher-state-*.pkl): the pickle holds the URL without the password. Unpickled, it
        connects with the password of the environment (PGPASSWORD or ~/.pgpass; MYSQL_PWD)."""

        def __getstate__(self):
            return {**super().__getstate__(), "url": without_password(self.url)}

        def __setstate__(self, state):
            url = state["url"]
            parsed = _url(url)
            pw = os.environ.get("MYSQL_PWD") if parsed.get_backend_name() == "mysql" else None
            if pw and parsed.password is None:
                url = parsed.set(password=pw).render_as_string(hide_password=False)
            super().__setstate__({**state, "url": url})

    cls = PasswordlessRDBStorage
    cls.__module__, cls.__qualname__ = __name__, cls.__name__  # picklable as sweeps.studies.<name>
    return cls


def __getattr__(name: str):  # PEP 562: the class is made on first use, as optuna is slow to import
    if name == "PasswordlessRDBStorage":
        globals()[name] = _passwordless_rdb_storage()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def optuna_url(cfg: SweepConfig, exp: Experiment) -> str:
    return cfg.search.optuna_storage or f"sqlite:///{exp.join(OPTUNA_DB)}"


def delete_studies(cfg: SweepConfig, exp: Experiment, exp_id: str) -> None:
    """Delete only the studies this experiment created (their names carry its id)."""
    import optuna

    storage = optuna_storage(optuna_url(cfg, exp))
    prefix = study_name(cfg, exp_id, "")
    for s in optuna.study.get_all_study_summaries(storage):
        if s.study_name.startswith(prefix):
            optuna.delete_study(study_name=s.study_name, storage=storage)
