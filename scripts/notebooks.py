"""Run the notebooks (text files, jupytext's percent format) and write them with their outputs as .ipynb.

    python scripts/notebooks.py [--output notebooks/out] [--timeout 1200] [NAME ...]

Each notebook runs in a fresh Python kernel from the repository root, against $LOYAL_HOME (default ./.loyal, what
`bash scripts/run.sh` leaves). A cell that fails stops with its error and a non-zero exit; the notebook is still
written, with the traceback in it, so that it can be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The notebooks by name (01_customers, or a prefix like 01), all of them in order by default."""
    every = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if not names:
        return every
    chosen = [path for path in every if any(path.stem.startswith(name) for name in names)]
    unknown = [name for name in names if not any(path.stem.startswith(name) for path in every)]
    if unknown:
        raise SystemExit(f"notebooks: no notebook named {', '.join(unknown)} in {NOTEBOOKS}")
    return chosen


def run(path: Path, output: Path, timeout: int = 1200):
    """Execute one notebook; write it (outputs included) under `output`; return the executed notebook."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = jupytext.read(path)
    output.mkdir(parents=True, exist_ok=True)
    target = output / f"{path.stem}.ipynb"
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO)}}).execute()
    except CellExecutionError:
        nbformat.write(notebook, target)
        raise
    nbformat.write(notebook, target)
    return notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--output", type=Path, default=NOTEBOOKS / "out")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds a cell may take")
    args = parser.parse_args()
    from nbclient.exceptions import CellExecutionError

    for path in notebooks(args.names):
        try:
            run(path, args.output, args.timeout)
        except CellExecutionError as error:
            print(f"notebooks: {path.name} failed; its output is in {args.output / (path.stem + '.ipynb')}:\n{error}",
                  file=sys.stderr)
            raise SystemExit(1) from None
        print(f"{path.name} -> {args.output / (path.stem + '.ipynb')}")


if __name__ == "__main__":
    main()
