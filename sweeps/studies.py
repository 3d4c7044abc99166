"""The Optuna study database: its URL checked before anything starts, the storage every study
uses (a pickle of it holds no password), and the deletion of an experiment's own studies.

The database is ``optuna.db`` (SQLite) in the experiment directory, or ``search.optuna_storage``
(PostgreSQL, MySQL) shared by many experiments; each study's name carries its experiment id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.contract import OPTUNA_DB
from sweeps.config import ConfigError, SweepConfig
from sweeps.experiment import Experiment, check_storage_path, redact
from sweeps.seeds import study_name


def check_database_url(url: str) -> None:
    """Parse a SQLAlchemy URL and import its driver, so a typo fails before anything starts."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = redact(url)
    _remember(url)  # a resumed run unpickles its saved study storage with this URL's password
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"search.optuna_storage: {shown!r} is not a database URL; use e.g. "
                          f"postgresql+psycopg://user@host/db or sqlite:///path/optuna.db") from None
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
        if parsed.database not in (None, "", ":memory:"):
            check_storage_path(str(Path(parsed.database).parent))
        return
    from sqlalchemy import create_engine, text

    timeout = {"postgresql": {"connect_timeout": 10}, "mysql": {"connect_timeout": 10}}
    try:
        engine = create_engine(url, connect_args=timeout.get(parsed.get_backend_name(), {}))
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
    the experiment); loading such a pickle then needs this project. Any other URL gets Optuna's
    own class, so Ray's loaders read the experiment without the project installed."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    if redact(url) == url:
        return optuna.storages.RDBStorage(url, **kwargs)
    _remember(url)
    return __getattr__("PasswordlessRDBStorage")(url, **kwargs)


# Database URLs given to this process, by their redacted form: a pickled storage carries only the
# redacted URL and gets the password back from here when a resumed run (given the URL again) loads it.
_FULL_URLS: dict[str, str] = {}


def _remember(url: str) -> None:
    shown = redact(url)
    if shown != url:
        _FULL_URLS[shown] = url


def _passwordless_rdb_storage():
    import optuna

    class PasswordlessRDBStorage(optuna.storages.RDBStorage):
        """Tune pickles the searcher, and so its storage, into the experiment directory (tuner.pkl,
        searcher-state-*.pkl): the pickle holds the URL without the password."""

        def __getstate__(self):
            return {**super().__getstate__(), "url": redact(self.url)}

        def __setstate__(self, state):
            super().__setstate__({**state, "url": _FULL_URLS.get(state["url"], state["url"])})

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
