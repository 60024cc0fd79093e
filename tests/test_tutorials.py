"""The tutorials run top to bottom (with ``BNN_MCMC_FAST=1``: same code, fewer transitions).

The committed notebooks keep the outputs of a full run; here they are executed on a copy,
so the test never rewrites them.  Equivalent: ``BNN_MCMC_FAST=1 pytest --nbmake tutorials``.
"""

from pathlib import Path

import nbclient  # noqa: E402
import nbformat  # noqa: E402
import pytest

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.ipynb"))


def test_there_are_three_tutorials():
    assert [p.name[:2] for p in TUTORIALS] == ["01", "02", "03"]


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, monkeypatch, tmp_path):
    book = nbformat.read(path, as_version=4)
    assert any(
        o.get("output_type") == "display_data" for c in book.cells for o in c.get("outputs", [])
    ), "committed notebook lost its figures"
    monkeypatch.setenv("BNN_MCMC_FAST", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
