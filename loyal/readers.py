"""Reading a retailer's file into a frame of strings, whatever its container: CSV (plain or gzip), Excel, parquet.

The kind is told by the file's first bytes, not its name, so a mislabelled file is still read or refused clearly.
Every cell comes back as a stripped string or missing; typing the values is the adapters' job.
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loyal.errors import LoyalError

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"  # .xlsx is a zip archive
PARQUET_MAGIC = b"PAR1"


def read_raw(path: Path) -> pd.DataFrame:
    """The file's rows as strings (pd.NA where empty), with its header as it was written."""
    if not path.exists():
        raise LoyalError(f"{path}: no such file")
    if path.is_dir():
        raise LoyalError(f"{path}: is a folder, expected a file")
    if path.stat().st_size == 0:
        raise LoyalError(f"{path}: the file is empty")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(PARQUET_MAGIC):
        frame = _read_parquet(path)
    elif head.startswith(ZIP_MAGIC):
        frame = _read_excel(path)
    elif head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        except (OSError, EOFError) as error:
            raise LoyalError(f"{path}: is not a readable gzip file ({error})") from None
        frame = _read_csv_bytes(path, data)
    else:
        frame = _read_csv_bytes(path, path.read_bytes())
    if frame.shape[1] == 0 or len(frame) == 0:
        raise LoyalError(f"{path}: has no data rows")
    return _clean_strings(frame)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise LoyalError(f"{path}: is not a readable parquet file ({_first_line(error)})") from None
    frame = table.to_pandas()
    return frame.astype("string")


def _read_excel(path: Path) -> pd.DataFrame:
    try:
        return pd.read_excel(path, dtype=str, engine="openpyxl")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise LoyalError(f"{path}: is not a readable Excel workbook ({_first_line(error)})") from None


def _read_csv_bytes(path: Path, data: bytes) -> pd.DataFrame:
    if not data.strip():
        raise LoyalError(f"{path}: the file is empty")
    text = _decode(path, data)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=False)
    except pd.errors.EmptyDataError:
        raise LoyalError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as error:
        raise LoyalError(f"{path}: cannot be read as CSV ({_first_line(error)})") from None


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 first; Windows-1252 (the usual retail export) only for text that is clearly text."""
    if b"\x00" in data[:65536]:
        raise LoyalError(f"{path}: is binary, not CSV, Excel or parquet")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    sample = data[:65536]
    controls = sum(1 for byte in sample if byte < 32 and byte not in (9, 10, 13))
    if controls > len(sample) // 100:
        raise LoyalError(f"{path}: is binary, not CSV, Excel or parquet")
    return data.decode("cp1252", errors="replace")


def _clean_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Strip every cell; an empty cell becomes missing. Headers are stripped too."""
    frame = frame.copy()
    frame.columns = [str(column).strip() for column in frame.columns]
    for column in frame.columns:
        values = frame[column].astype("string").str.strip()
        frame[column] = values.mask(values == "")
    return frame


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
