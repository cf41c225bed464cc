"""`vitrine embed` reruns sweep the temp files a killed run left in its output folder, and only those."""

from __future__ import annotations

import numpy as np
from tests.conftest import make_rows, write_folder

from vitrine.embed import run_embed


def test_a_rerun_removes_the_temp_files_of_a_killed_run(tmp_path, small_model):
    write_folder(tmp_path / "cat", make_rows(6))
    out = tmp_path / "out"
    run_embed(str(tmp_path / "cat"), out=str(out), batch_size=4, part_size=4, progress=False, encoder=small_model)
    # what a run killed mid-write leaves: a part half written, a merge cut short; and a user's own file beside them
    stale = [
        out / "parts" / "part-000002.image.npy.tmp", out / "parts" / "part-000002.csv.tmp",
        out / "image_embeddings.npy.tmp.npy", out / "metadata.csv.tmp",
    ]
    for path in stale:
        path.write_bytes(b"cut short")
    (out / "notes.tmp").write_text("not the job's")
    result = run_embed(
        str(tmp_path / "cat"), out=str(out), batch_size=4, part_size=4, progress=False, encoder=small_model
    )
    assert result.computed == 0 and np.load(out / "image_embeddings.npy").shape[0] == 6
    assert [p.name for p in stale if p.exists()] == [] and (out / "notes.tmp").exists()
