"""sweeps/studies.py: database URLs checked before anything starts, without showing a password."""

from __future__ import annotations

import pytest

from sweeps.config import ConfigError
from sweeps.studies import check_database_url


@pytest.mark.parametrize("url, fragment", [
    ("not a url", "is not a database URL"),
    ("nosuchdb://x/y", "unknown database"),
    ("postgresql+nosuchdriver://u@h/db", "unknown database"),
    ("postgresql+psycopg://alice:s3cret@127.0.0.1:9/db", "cannot connect"),
])
def test_bad_database_urls_fail_with_one_line_and_no_password(url, fragment):
    if "psycopg" in url:
        pytest.importorskip("psycopg", reason="psycopg is in the [cluster] and [dev] extras")
    with pytest.raises(ConfigError, match=fragment) as info:
        check_database_url(url)
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)


def test_sqlite_urls_need_a_writable_directory(tmp_path):
    check_database_url(f"sqlite:///{tmp_path}/optuna.db")
    with pytest.raises(ConfigError, match="not writable"):
        check_database_url("sqlite:////proc/optuna.db")
