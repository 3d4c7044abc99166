"""Real services for the distributed tests (tests/sweeps/test_distributed.py), started here and
stopped after: an S3 server (moto), a PostgreSQL server (pgserver) and a multi-node Ray cluster
(``ray.cluster_utils.Cluster``, every node a process on this machine). Each fixture skips, with
the reason, only when its package cannot be imported (they are in the ``dev`` extra)."""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class S3:
    """A running S3-compatible server: the environment that points pyarrow (and so Ray) at it."""

    endpoint: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def filesystem(self):
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                                       endpoint_override=self.endpoint)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object under ``bucket/prefix`` (a key per file, as 'bucket/...')."""
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(f"{self.bucket}/{prefix}".rstrip("/"), recursive=True,
                                           allow_not_found=True)
        return sorted(i.path for i in self.filesystem().get_file_info(selector)
                      if i.type == pyarrow.fs.FileType.File)

    def read(self, key: str) -> bytes:
        with self.filesystem().open_input_stream(key) as fh:
            return fh.read()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port) with one empty bucket."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
    boto3 = pytest.importorskip("boto3", reason="boto3 comes with moto[server] (dev extra)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3(endpoint=f"http://{host}:{port}", bucket="selu-sweeps")
    boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=s3.bucket)
    yield s3
    server.stop()


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server (Unix socket only) with a password-protected role."""

    socket_dir: str
    user: str
    password: str
    database: str
    server: object

    def url(self, password: str | None = None) -> str:
        """SQLAlchemy URL for the psycopg 3 driver, as a user would pass it to --optuna-storage."""
        pw = self.password if password is None else password
        return f"postgresql+psycopg://{self.user}:{pw}@/{self.database}?host={self.socket_dir}"

    def psql(self, sql: str) -> str:
        return self.server.psql(sql)


@pytest.fixture(scope="session")
def postgres():
    """pgserver's PostgreSQL in a fresh directory, deleted after. As root, pgserver runs the server
    as its own system user ``pgserver`` (it creates it with useradd); nothing to do here for that.
    A role with a password owns the test database, and pg_hba makes the password required for it
    (the other roles keep pgserver's trust authentication), so a URL's password is really used."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver is in the dev extra")
    pytest.importorskip("psycopg", reason="psycopg[binary] is in the dev extra")
    # Under /tmp, not pytest's tmp dir: as root, pgserver opens every parent directory to others.
    root = Path(tempfile.mkdtemp(prefix="selu-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        server = pgserver.get_server(root / "data", cleanup_mode="delete")
    pg = Postgres(socket_dir=str(server.get_postmaster_info().socket_dir), user="sweeper",
                  password="pw-" + secrets.token_hex(8), database="optuna", server=server)
    server.psql(f"CREATE ROLE {pg.user} LOGIN PASSWORD '{pg.password}';")
    server.psql(f"CREATE DATABASE {pg.database} OWNER {pg.user};")
    hba = root / "data" / "pg_hba.conf"
    hba.write_text(f"local all {pg.user} scram-sha-256\n" + hba.read_text())
    server.psql("SELECT pg_reload_conf();")
    yield pg
    server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster of three nodes on this machine: a head with 0 CPUs (no trial runs there, as in
    cluster.yaml) and two workers with 2 CPUs and 2 fake GPUs each. Its own RAY_TMPDIR, so the
    ``ray_current_cluster`` file it writes does not make ``--address auto`` find it elsewhere."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    from ray.experimental import internal_kv

    # Starting a node in this process points its internal KV at that node's GCS: put back the one
    # of a Ray instance the session started for other tests (``ray_local``), or they die later.
    session_kv = internal_kv.global_gcs_client
    tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", tmp)
        cluster = cluster_utils.Cluster(initialize_head=True,
                                        head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            for _ in range(2):
                cluster.add_node(num_cpus=2, num_gpus=2)
            cluster.wait_for_nodes()
            yield cluster
        finally:
            # Not cluster.shutdown(): it resets this process's internal KV too.
            for node in list(cluster.worker_nodes):
                cluster.remove_node(node)
            cluster.remove_node(cluster.head_node)
            if session_kv is not None:
                internal_kv._initialize_internal_kv(session_kv)
            else:
                internal_kv._internal_kv_reset()
            shutil.rmtree(tmp, ignore_errors=True)
