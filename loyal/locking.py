"""One lock for every command that writes the home: ingest, forget, features build and materialize, train,
evaluate, campaign, retrain and the main job.

Writers take `$LOYAL_HOME/.lock` (flock: the kernel releases it however the process ends, kill -9 included) and
so run one at a time; a second writer waits up to LOYAL_LOCK_TIMEOUT seconds (default 1800), saying once whom it
waits for, then gives up with HomeBusy (exit 75, "try again later"). The lock is reentrant within a process (the
main job and `retrain` call ingest, build and train under one lock) and shared safely by its threads.

Readers take no lock: every write becomes visible by one rename (the canonical tables' manifest, a feature build's
folder, the suppression list), so a reader sees the state before a write or after it, never a mix.

Whoever takes the lock first clears what crashed writers left (a writer holding it is the only one writing):
hidden `.*.tmp` files and `.*.partial` folders anywhere in the home, and canonical table files no manifest names.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from loyal.errors import LoyalError
from loyal.home import Home, private
from loyal.store import discard_unreferenced_tables

TIMEOUT_ENV = "LOYAL_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 1800.0
BUSY_EXIT_CODE = 75  # EX_TEMPFAIL


class HomeBusy(LoyalError):
    """Another process kept the home for longer than this one would wait."""


_threads: dict[Path, threading.RLock] = {}
_held: dict[Path, tuple[int, object]] = {}  # home -> (depth, the open lock file) while this process holds it
_registry = threading.Lock()


def lock_timeout() -> float:
    setting = os.environ.get(TIMEOUT_ENV)
    if not setting:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(setting)
    except ValueError:
        raise LoyalError(f"{TIMEOUT_ENV}={setting!r} is not a number of seconds") from None
    if seconds < 0:
        raise LoyalError(f"{TIMEOUT_ENV} must be 0 or more seconds, not {setting}")
    return seconds


@contextlib.contextmanager
def writing(home: Path, command: str) -> Iterator[None]:
    """Hold the home's write lock while the block runs (see the module's docstring)."""
    home = Path(home).absolute()
    timeout = lock_timeout()
    with _registry:
        in_process = _threads.setdefault(home, threading.RLock())
    if not in_process.acquire(timeout=timeout):
        raise HomeBusy(f"another thread of this process kept {home} for over {timeout:g} s")
    try:
        depth, lock_file = _held.get(home, (0, None))
        if depth == 0:
            lock_file = _take(home, command, timeout)
        _held[home] = (depth + 1, lock_file)
        try:
            if depth == 0:
                sweep(home)
            yield
        finally:
            depth, _ = _held[home]
            if depth == 1:
                del _held[home]
                lock_file.truncate(0)
                lock_file.close()  # releases the flock
            else:
                _held[home] = (depth - 1, lock_file)
    finally:
        in_process.release()


def writes_home(command: str):
    """Run the decorated function, whose first argument is the home, under the home's write lock."""
    def decorate(function):
        @functools.wraps(function)
        def locked(home, *args, **kwargs):
            with writing(home, command):
                return function(home, *args, **kwargs)
        return locked
    return decorate


def _take(home: Path, command: str, timeout: float):
    private(home)
    lock_file = open(Home(home).lock, "a+")
    deadline, said = time.monotonic() + timeout, False
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(lock_file)
            if time.monotonic() >= deadline:
                lock_file.close()
                raise HomeBusy(f"{holder} is writing {home}; gave up after {timeout:g} s ({TIMEOUT_ENV}); "
                               "try again when it is done") from None
            if not said:
                print(f"loyal: waiting for {holder} to finish writing {home} (at most {timeout:g} s)",
                      file=sys.stderr, flush=True)
                said = True
            time.sleep(0.1)
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(json.dumps({"command": command, "pid": os.getpid(),
                                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    lock_file.flush()
    return lock_file


def _holder(lock_file) -> str:
    """Who holds the lock, in words, from what it wrote into the lock file."""
    lock_file.seek(0)
    try:
        holder = json.loads(lock_file.read() or "{}")
    except json.JSONDecodeError:
        holder = {}
    if not holder:
        return "another loyal command"
    return f"`loyal {holder.get('command', '?')}` (pid {holder.get('pid', '?')}, since {holder.get('since', '?')})"


def held(home: Path) -> bool:
    """Whether this process holds the home's write lock."""
    return Path(home).absolute() in _held


def sweep(home: Path) -> dict[str, int]:
    """Remove what interrupted writers left under the home; called with the lock held. Counts of what went."""
    removed = {"temporary_files": 0, "partial_builds": 0}
    for folder, folders, files in os.walk(home):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                Path(folder, name).unlink(missing_ok=True)
                removed["temporary_files"] += 1
        for name in list(folders):
            if name.startswith(".") and name.endswith(".partial"):
                shutil.rmtree(Path(folder, name), ignore_errors=True)
                folders.remove(name)
                removed["partial_builds"] += 1
    removed["unreferenced_table_files"] = discard_unreferenced_tables(home)
    return removed
