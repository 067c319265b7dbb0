from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "online_retail.csv.gz"
NO_REAL_DATA = (
    f"{REAL_DATA} is absent: get the UCI Machine Learning Repository dataset 352, 'Online Retail' (.xlsx), "
    "and put it there or point LOYAL_DATA at it"
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh LOYAL_HOME for one test."""
    folder = tmp_path / "home"
    monkeypatch.setenv("LOYAL_HOME", str(folder))
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
