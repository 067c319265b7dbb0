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
from pathlib import Path

DEFAULT_HOME = ".loyal"  # inside the working directory, and git-ignored
ONLINE_STORE_ENV = "LOYAL_ONLINE_STORE"  # "sqlite" (default) or redis://[:PASSWORD@]HOST:PORT[/DB]
SECRET_KEY = "secret.key"
OWNER_ONLY = 0o077  # the umask: files 0600, folders 0700


def loyal_home() -> Path:
    """The data folder: $LOYAL_HOME, or ./.loyal when unset."""
    return Path(os.environ.get("LOYAL_HOME") or DEFAULT_HOME).absolute()


def canonical_dir(home: Path) -> Path:
    return home / "canonical"


def quarantine_dir(home: Path) -> Path:
    return home / "quarantine"


def ground_truth_dir(home: Path) -> Path:
    """What the synthetic generator planted (taste groups, churners), kept for tests and model reports."""
    return home / "ground_truth"


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
    path = home / SECRET_KEY
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = home / f".{SECRET_KEY}.{os.getpid()}.tmp"
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
