"""The job's side of a sweep: sweep.json, names and tags, records, reused results.
(Skipping and resuming against a real store: tests/app/test_sweep.py, slow.)"""

from __future__ import annotations

import pickle
from pathlib import Path

from snnrun.app.sweep_job import JobRecord, Reused, SweepInfo, SweepJob
from snnrun.track.query import JOB_TAG, SWEEP_ID_TAG


def info(tmp_path: Path, sweep_id: str = "s1", parent: str | None = "p1") -> SweepInfo:
    return SweepInfo(
        sweep_id=sweep_id,
        sweep_dir=str(tmp_path),
        swept={"stbp.decay": "0.1,0.2", "seed": "0,1"},
        tracking_uri="sqlite:///x.db" if parent else None,
        parent_run_id=parent,
    )


def test_a_job_is_named_and_tagged_by_its_swept_overrides(tmp_path: Path) -> None:
    overrides = ("stbp.decay=0.2", "seed=1", "debug=fast", "paths.output_root=/o")
    job = SweepJob(3, overrides, info(tmp_path))
    assert job.name == "stbp.decay=0.2 seed=1"
    assert job.tags == {SWEEP_ID_TAG: "s1", JOB_TAG: "s1/3"}
    link = job.link
    assert link is not None
    assert (link.parent_run_id, link.run_name) == ("p1", "stbp.decay=0.2 seed=1")
    assert SweepJob(3, overrides, info(tmp_path, parent=None)).link is None
    assert SweepJob(0, ("seed=1",)).name == "seed=1"  # no sweep info: all overrides


def test_sweep_info_round_trips_through_its_file(tmp_path: Path) -> None:
    written = info(tmp_path)
    written.save()
    assert SweepInfo.load(tmp_path) == written
    assert SweepInfo.load(tmp_path / "absent") is None


def test_a_reused_result_is_a_float_that_keeps_its_run_through_pickle() -> None:
    value = pickle.loads(pickle.dumps(Reused(0.75, "run-7")))
    assert isinstance(value, Reused) and value == 0.75 and value.run_id == "run-7"


def test_records_of_an_earlier_sweep_in_the_same_folder_are_ignored(
    tmp_path: Path,
) -> None:
    JobRecord("old", 0, "seed=0", "ok", 0.1, "r0").save(str(tmp_path))
    JobRecord("s1", 1, "seed=1", "failed", error="boom").save(str(tmp_path))
    JobRecord("s1", 0, "seed=0", "skipped", 0.5, "r9").save(str(tmp_path))
    records = JobRecord.load_all(info(tmp_path))
    assert [(r.num, r.status) for r in records] == [(0, "skipped"), (1, "failed")]
