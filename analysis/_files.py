"""Bounded readers of untrusted files, one set for the whole tool: the analysis reads experiment
directories that anyone with write access to the storage may have edited, and the sweep reads its
own config files and saved ``config.yaml`` through the same YAML loader.

* :func:`read_bytes` opens only a regular file (never a FIFO or a device, so it cannot block), and
  with ``inside=`` only one that resolves inside that directory (no symbolic link out of an
  experiment); it reads at most ``limit`` bytes.
* :func:`load_yaml` refuses YAML aliases (``*name``: a 2 KB "billion laughs" file expands to
  gigabytes) and nesting deeper than ``MAX_DEPTH``; :func:`parse_json` bounds nesting the same way.
* :func:`sqlite_budget` interrupts an SQLite query that runs longer than its time budget (a
  recursive view makes ``SELECT * FROM studies`` run forever).
* :func:`redact_text` hides the password of every URL in a string.

Each reader raises :class:`Unreadable` with a short reason fit for a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from analysis.contract import REDACTED

MAX_DEPTH = 64            # nesting of any YAML or JSON document the tool reads (a config has 5 levels)
MAX_YAML_BYTES = 1 << 20  # a config file or saved config.yaml
MAX_SMALL_BYTES = 1 << 20  # markers, runs.jsonl, params.json
SQLITE_BUDGET_S = 30.0    # the most one read of an Optuna database may take


class Unreadable(Exception):
    """A file that cannot be used; the message says why in a few words (never its contents)."""


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def _inside(path: Path, root: Path) -> bool:
    try:
        real, base = os.path.realpath(path), os.path.realpath(root)
    except (OSError, ValueError):
        return False
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def check_regular(path: Path, limit: int | None = None, inside: Path | None = None) -> os.stat_result:
    """``path``'s stat if it is a regular file (of at most ``limit`` bytes, resolving inside
    ``inside``); ``Unreadable(reason)`` otherwise. Never opens the file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise Unreadable("missing" if isinstance(exc, FileNotFoundError) else
                         _why(exc) if isinstance(exc, OSError) else "not a valid path") from None
    if stat.S_ISDIR(st.st_mode):
        raise Unreadable("is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable("not a regular file (a FIFO, socket or device)")
    if inside is not None and not _inside(path, inside):
        raise Unreadable("a symbolic link out of the experiment directory")
    if limit is not None and st.st_size > limit:
        raise Unreadable(f"{st.st_size / 1e6:.1f} MB, over the {limit / 1e6:.1f} MB this file can be "
                         f"(is it the right file?)")
    return st


def read_bytes(path: str | os.PathLike, limit: int | None = MAX_SMALL_BYTES,
               inside: str | os.PathLike | None = None) -> bytes:
    """A regular file's bytes (at most ``limit``); ``Unreadable(reason)`` otherwise. Opened with
    O_NONBLOCK, so a FIFO swapped in after the check cannot block the read either."""
    path = Path(path)
    check_regular(path, limit, Path(inside) if inside is not None else None)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise Unreadable(_why(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unreadable("not a regular file (a FIFO, socket or device)")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if limit is not None and size > limit:
                raise Unreadable(f"over the {limit / 1e6:.1f} MB this file can be (is it the right file?)")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise Unreadable(_why(exc)) from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, limit: int | None = MAX_SMALL_BYTES,
              inside: str | os.PathLike | None = None) -> str:
    try:
        return read_bytes(path, limit, inside).decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8 text (binary or damaged)") from None


# --------------------------------------------------------------------------------------------
# YAML and JSON


def _bounded_loader():
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """yaml.SafeLoader without aliases and with a depth limit: what it builds is at most as big
        as the text it reads."""

        _depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise Unreadable("YAML aliases (*name) are not allowed; write the values out")
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    raise Unreadable(f"nested deeper than {MAX_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return BoundedLoader


_LOADER: Any = None


def load_yaml(text: str, limit: int = MAX_YAML_BYTES) -> Any:
    """``yaml.safe_load`` bounded: at most ``limit`` characters, no aliases, at most ``MAX_DEPTH``
    levels. Raises ``Unreadable(reason)`` for those, and ``yaml.YAMLError`` for bad syntax."""
    global _LOADER
    if len(text) > limit:
        raise Unreadable(f"larger than {limit / 1e6:.1f} MB")
    if _LOADER is None:
        _LOADER = _bounded_loader()
    loader = _LOADER(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise Unreadable("nested too deeply") from None
    finally:
        loader.dispose()


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` with the nesting bounded; ``ValueError`` for bad JSON or too deep."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return value


# --------------------------------------------------------------------------------------------
# SQLite under a time budget


def sqlite_budget(seconds: float = SQLITE_BUDGET_S, state: dict | None = None):
    """An sqlite3 progress handler (``connection.set_progress_handler(handler, 10_000)``) that
    interrupts any statement once ``seconds`` have passed since it was made: SQLite calls it every
    10,000 VM steps, also in a query that never returns a row (a recursive view). The interrupted
    statement raises ``sqlite3.OperationalError``; ``state["out"]`` then says the budget ran out."""
    deadline = time.monotonic() + seconds
    state = {} if state is None else state
    state["out"] = False

    def handler() -> int:
        if time.monotonic() > deadline:
            state["out"] = True
            return 1
        return 0

    return handler


# --------------------------------------------------------------------------------------------
# Secrets

# Any URL's scheme and authority: ``scheme://[userinfo@]host[:port]`` up to the path, query or
# fragment. The userinfo is split at the last '@' (as urllib does), so a password holding '@' is
# hidden whole.
_URL_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#]*")


def _redact_match(m: re.Match) -> str:
    scheme, _, authority = m.group(0).partition("://")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return m.group(0)
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{REDACTED}@{host}"


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``: a whole URL, a flag such
    as ``--optuna-storage=postgresql://u:pw@h/db``, a ``--set key=URL`` or a sentence."""
    return _URL_AUTHORITY.sub(_redact_match, text) if "://" in text else text


def redact_tree(value: Any) -> Any:
    """Every string in a nested dict/list/tuple passed through :func:`redact_text`."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_tree(v) for v in value)
    return value
