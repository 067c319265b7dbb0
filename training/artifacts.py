"""How a trained model is written to files and read back without pickle: numbers as arrays in one `.npz` read with
`allow_pickle=False`, everything else (configs, cutoffs, category names) in one JSON file beside it. Loading a model
therefore reads data and never runs code from the artifact store; the code that turns the data back into a model
is Loyal's own, and a registered model names it by file (MLflow's models from code).

A family's model writes itself with `save(folder)` and reads itself back with `load(folder)`, using the helpers
here: `Arrays` collects named arrays (sparse matrices and torch state_dicts included) and refuses any that numpy
could only store by pickling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

ARRAYS = "arrays.npz"
CONFIG = "config.json"
FORMAT = 1  # the layout of these files; a model written in another layout is refused, not guessed at


class Arrays(dict):
    """Named numpy arrays, none of them of dtype object (numpy pickles those)."""

    def put(self, name: str, values) -> None:
        array = np.asarray(values)
        if array.dtype == object:
            raise TypeError(f"{name}: an array of Python objects cannot be saved without pickle")
        self[name] = array

    def put_ids(self, name: str, index: pd.Index) -> None:
        """An id index as a fixed-width unicode array (read back by `ids`)."""
        self.put(name, np.asarray(index.astype(str), dtype=str))

    def put_sparse(self, name: str, matrix) -> None:
        matrix = sp.csr_matrix(matrix)
        for part in ("data", "indices", "indptr"):
            self.put(f"{name}.{part}", getattr(matrix, part))
        self.put(f"{name}.shape", np.asarray(matrix.shape, dtype=np.int64))

    def put_state(self, name: str, module: torch.nn.Module) -> None:
        for key, tensor in module.state_dict().items():
            self.put(f"{name}.{key}", tensor.detach().cpu().numpy())

    # ------------------------------------------------------------------------------------------- reading back
    def ids(self, name: str) -> pd.Index:
        return pd.Index(self[name].astype(object), dtype=object)

    def sparse(self, name: str) -> sp.csr_matrix:
        shape = tuple(int(n) for n in self[f"{name}.shape"])
        return sp.csr_matrix((self[f"{name}.data"], self[f"{name}.indices"], self[f"{name}.indptr"]), shape=shape)

    def load_state(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        """`module` with the weights stored under `name`, in eval mode (as training leaves it)."""
        prefix = f"{name}."
        state = {key[len(prefix):]: torch.from_numpy(np.array(value)) for key, value in self.items()
                 if key.startswith(prefix)}
        module.load_state_dict(state, strict=True)
        return module.eval()


def write(folder: Path, config: dict, arrays: Arrays) -> Path:
    """Write `config` (JSON) and `arrays` (npz) into a new folder; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=False)
    (folder / CONFIG).write_text(json.dumps({"format": FORMAT, **config}, indent=1, sort_keys=True) + "\n")
    np.savez(folder / ARRAYS, **arrays)
    return folder


def read(folder: Path, kind: str) -> tuple[dict, Arrays]:
    """The config and arrays `write` put in `folder`, checked to be a `kind` in this layout."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    if config.get("format") != FORMAT or config.get("kind") != kind:
        raise ValueError(f"{folder} holds a {config.get('kind')!r} in layout {config.get('format')!r}, "
                         f"not a {kind!r} in layout {FORMAT}")
    with np.load(folder / ARRAYS, allow_pickle=False) as stored:
        arrays = Arrays({name: stored[name] for name in stored.files})
    return config, arrays
