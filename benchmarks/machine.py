"""What every benchmark writes beside its figures: the machine they came from. (The scripts run as
`python benchmarks/NAME.py`, so this folder is on their path.)"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return {"cpus": os.cpu_count(), "memory_gib": round(memory, 1), "platform": platform.platform(),
            "python": platform.python_version()}


def write_results(path: Path, result: dict) -> None:
    """The figures and the machine, as JSON at `path`; printed too."""
    result = result | {"machine": machine()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
