"""notebooks/explore_records.ipynb executed with nbclient against run folders made in the test: two
machines, several models, repetitions (the old notebook failed on a non-unique index there)."""
import os
from pathlib import Path

import pytest

from crafted_runs import CPU_PROV, make_records, write_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]


def test_notebook_runs_on_repetitions_and_several_models(tmp_path, monkeypatch):
    gpu = write_run(tmp_path / "gpu", make_records(run_id="gpu", batches=(1, 8), repetitions=3)
                    + make_records(run_id="gpu", model="other", batches=(1,)))
    cpu = write_run(tmp_path / "cpu", make_records(run_id="cpu", profile="cpu-generic", prov=CPU_PROV, batches=(1,),
                                                   scale=0.1, repetitions=2), profile="cpu-generic")
    monkeypatch.setenv("HARNESS_RUNS", os.pathsep.join([str(gpu), str(cpu)]))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.read(REPO / "notebooks" / "explore_records.ipynb", as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "2 run(s)" in text and "models: ['m<1>', 'other']" in text
    assert "1.5" in text           # int8-wo speedup over its own run's baseline
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
