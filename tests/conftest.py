from __future__ import annotations

import hashlib
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest

from loyal.noise import THIRD_PARTY

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """The third parties' noise (loyal/noise.py) silenced in the tests as in the command line and the service."""
    for spec in THIRD_PARTY:
        config.addinivalue_line("filterwarnings", spec)
REAL_DATA = REPO.parent / "shared" / "data" / "online_retail.csv.gz"
NO_REAL_DATA = (
    f"{REAL_DATA} is absent: get the UCI Machine Learning Repository dataset 352, 'Online Retail' (.xlsx), "
    "and put it there or point LOYAL_DATA at it"
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh LOYAL_HOME for one test, tracked into its own MLflow store: a tracking URI another test left in the
    environment (monkeypatch restores what it found, and MLflow exports every URI it is given) would otherwise read
    as the user's choice."""
    folder = tmp_path / "home"
    monkeypatch.setenv("LOYAL_HOME", str(folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    return folder


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.exists():
        pytest.skip(NO_REAL_DATA)
    return REAL_DATA


def write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"))
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under folder with the hash of its bytes: equal digests mean nothing changed."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server on a free loopback port for this test session (Debian package redis-server).

    Absent binary: skipped locally, a failure in CI (CI=true), where .ci/run installs it."""
    import os
    import shutil
    import subprocess
    import time

    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run should have installed the Debian package")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def _missing(what: str, install: str):
    """Absent server: skipped locally, a failure in CI (CI=true), where .ci/run installs it."""
    import os

    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed: .ci/run should have installed it")
    pytest.skip(f"{what} is not installed ({install})")


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian package postgresql) on a free loopback port for this test session, with
    the databases `mlflow` and `optuna`; yields its SQLAlchemy URL without a database. As root (CI), the server runs
    as the user postgres, which the package creates: PostgreSQL refuses to run as root."""
    import glob
    import os
    import shutil
    import subprocess
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found[-1]:
        _missing("PostgreSQL", "apt-get install postgresql")
    bindir = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="loyal-postgres-"))  # not under pytest's folders, which only root enters
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def run(*command):
        subprocess.run([*as_user, *command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "loyal", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        for database in ("mlflow", "optuna"):
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "loyal", database)
        yield f"postgresql+psycopg://loyal@127.0.0.1:{port}"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """A real `mlflow server` for this test session: PostgreSQL as its backend store, its artifacts served from a
    folder of its own. Yields its URL, what LOYAL_TRACKING_URI takes."""
    import sys

    from loyal.serving.launch import free_port, started

    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"{postgres}/mlflow", "--serve-artifacts",
               "--artifacts-destination", (folder / "artifacts").as_uri(), "--workers", "1"]
    with started(command, f"http://127.0.0.1:{port}/health", folder / "log", timeout=120):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(params=["sqlite", "redis"])
def online_store(request, monkeypatch) -> str:
    """Each online test runs against the embedded SQLite store and against a real Redis server."""
    if request.param == "sqlite":
        monkeypatch.delenv("LOYAL_ONLINE_STORE", raising=False)
        return "sqlite"
    url = request.getfixturevalue("redis_url")
    import redis

    redis.Redis.from_url(url).flushall()  # one server for the session: each test starts empty
    monkeypatch.setenv("LOYAL_ONLINE_STORE", url)
    return "redis"


@contextmanager
def trained_shop(home: Path, config, materialized: bool = False) -> Iterator[Path]:
    """A synthetic shop at `home` (LOYAL_HOME while the block runs), its features built (and in the online store
    when asked) and both models trained on all of it and carrying `champion`: the service and campaigns answer
    with whatever carries it; whether these versions earned it is the training tests' concern."""
    from mlflow import MlflowClient

    from loyal.features.repo import build, materialize
    from loyal.ingest import ingest_synthetic
    from loyal.store import read_table
    from loyal.training.churn.training import train_churn
    from loyal.training.recommender.training import train_recommender

    patch = pytest.MonkeyPatch()
    patch.setenv("LOYAL_HOME", str(home))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        ingest_synthetic(config, home)
        build(home)
        if materialized:
            materialize(home)
        end = (read_table(home, "transactions")["timestamp"].max() + timedelta(days=1)).date()
        for name, summary in (("loyal-recommender", train_recommender(home, end, trials=0, draws=50)),
                              ("loyal-churn", train_churn(home, end, trials=0, draws=50))):
            if not summary["champion"]:
                MlflowClient().set_registered_model_alias(name, "champion", summary["version"])
        yield home
    finally:
        patch.undo()
