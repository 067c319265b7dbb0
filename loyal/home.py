"""Where Loyal keeps its data: one folder, LOYAL_HOME, resolved when asked (never at import)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".loyal"  # inside the working directory, and git-ignored


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
