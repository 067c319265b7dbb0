"""Where Loyal keeps its data: one folder, LOYAL_HOME, resolved when asked (never at import).

The home holds personal data (purchase histories, consent, contact history), so it is private to its owner:
`private()` makes every file a Loyal process creates owner-only (umask 077) and tightens a home that an older
version left readable by others. Its secret key (`secret.key`, 0600, made once) keys the suppression list's
hashes, so that they cannot be reversed from the list alone.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".loyal"  # inside the working directory, and git-ignored
ONLINE_STORE_ENV = "LOYAL_ONLINE_STORE"  # "sqlite" (default) or redis://[:PASSWORD@]HOST:PORT[/DB]
TRACKING_ENV = "LOYAL_TRACKING_URI"  # a shared MLflow tracking server, http://HOST:PORT (default: the home's SQLite)
OPTUNA_ENV = "LOYAL_OPTUNA_STORAGE"  # a shared Optuna storage, an SQLAlchemy URL (default: the home's SQLite)
ENGINE_ENV = "LOYAL_ENGINE"  # what runs the feature definitions and batch scoring: "embedded" (default) or "spark"
OWNER_ONLY = 0o077  # the umask: files 0600, folders 0700


def loyal_home() -> Path:
    """The data folder: $LOYAL_HOME, or ./.loyal when unset."""
    return Path(os.environ.get("LOYAL_HOME") or DEFAULT_HOME).absolute()


@dataclass(frozen=True)
class Home:
    """Every path under LOYAL_HOME, named here and nowhere else: `Home(home).contacts`."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).absolute())

    # ------------------------------------------------------------------ the data (personal: see `private`)
    @property
    def canonical(self) -> Path:
        """The canonical tables and their manifest (loyal/store.py)."""
        return self.root / "canonical"

    @property
    def events(self) -> Path:
        """The event log: every event the web shop or `loyal events push` sent; the canonical manifest says how far
        it has been folded into the tables (events.py)."""
        return self.root / "events.db"

    @property
    def quarantine(self) -> Path:
        """Rows ingest set aside, with their reasons."""
        return self.root / "quarantine"

    @property
    def ground_truth(self) -> Path:
        """What the synthetic generator planted (taste groups, churners), kept for tests and model reports."""
        return self.root / "ground_truth"

    @property
    def feast(self) -> Path:
        """Feast's repository: its configuration, registry, offline builds and the SQLite online store."""
        return self.root / "feast"

    @property
    def contacts(self) -> Path:
        """One row per customer per campaign: who was emailed or held out, and when."""
        return self.root / "contacts.parquet"

    @property
    def suppression(self) -> Path:
        """The keyed hashes of forgotten customers (loyal/suppression.py)."""
        return self.root / "suppression.parquet"

    @property
    def erasures(self) -> Path:
        """The audit log of erasures: counts and times, never ids."""
        return self.root / "erasures.jsonl"

    @property
    def erasure_pending(self) -> Path:
        """Present while an erasure runs: a count and a time, never ids."""
        return self.root / "erasure.pending"

    @property
    def secret_key(self) -> Path:
        return self.root / "secret.key"

    # ------------------------------------------------------------------ the models
    @property
    def mlflow_db(self) -> Path:
        """MLflow's tracking store and registry, unless MLFLOW_TRACKING_URI names another."""
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    # ------------------------------------------------------------------ what commands write for people
    @property
    def campaigns(self) -> Path:
        return self.root / "campaigns"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def demo(self) -> Path:
        """What the main job makes up for its demonstration (consent answers)."""
        return self.root / "demo"

    # ------------------------------------------------------------------ coordination
    @property
    def lock(self) -> Path:
        """Every writer's lock (loyal/locking.py)."""
        return self.root / ".lock"

    @property
    def retrain_lock(self) -> Path:
        """One scheduled retrain at a time."""
        return self.root / "retrain.lock"


def private(home: Path) -> None:
    """From now on this process creates files and folders for its owner alone; the home exists and is 0700, and
    anything in it that others could read or write (a home made by an older Loyal) is made owner-only."""
    os.umask(OWNER_ONLY)
    home.mkdir(parents=True, exist_ok=True)
    for folder, folders, files in os.walk(home):
        for path in (folder, *(os.path.join(folder, name) for name in (*folders, *files))):
            try:
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & 0o700)
            except FileNotFoundError:  # removed meanwhile by another process: nothing left to tighten
                pass


def secret_key(home: Path) -> bytes:
    """The home's secret key, made on first use: 32 random bytes in a file only its owner can read. Created with
    O_EXCL, so two processes asking at once agree on one key."""
    path = Home(home).secret_key
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails where another process made the key first: theirs is the key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()
