"""The notebooks run, end to end, on a small synthetic shop, without an error, and show their plots (each runs in a
real Jupyter kernel through scripts/notebooks.py, as a user's would)."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO, trained_shop

pytestmark = pytest.mark.notebooks


def _runner():
    spec = importlib.util.spec_from_file_location("notebooks_runner", REPO / "scripts" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A small synthetic shop (three channels, consent, six past campaigns), its features built, both models carrying
    `champion` and an uplift model judged on the latest campaign: what the main job leaves, in small."""
    from loyal.app.uplift_evaluation import evaluate_uplift, write_report
    from loyal.synthetic import SyntheticConfig
    from loyal.training.uplift.training import train_uplift

    home = tmp_path_factory.mktemp("notebooks") / "home"
    with trained_shop(home, SyntheticConfig(customers=300, days=400, seed=3, campaigns=6)):
        train_uplift(home, draws=20)
        write_report(home, evaluate_uplift(home, 20.0, draws=20))
        yield home


@pytest.mark.parametrize("name", [path.stem for path in _runner().notebooks()])
def test_the_notebook_runs_and_shows_its_plots(name, shop, tmp_path, monkeypatch):
    runner = _runner()
    monkeypatch.setenv("LOYAL_HOME", str(shop))  # the kernel inherits the environment
    notebook = runner.run(*runner.notebooks([name]), tmp_path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(output.get("output_type") != "error" for cell in code for output in cell.outputs)
    drawing = [cell for cell in code if "plots." in cell.source]
    assert drawing and all(any("image/png" in output.get("data", {}) for output in cell.outputs) for cell in drawing)
    assert (tmp_path / f"{name}.ipynb").exists()
