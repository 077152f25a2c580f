"""The resume mark: which history rows are safely out after QoS 0 publishing (backfill.py)."""

from __future__ import annotations

from tapline.edge.backfill import Job, Progress, resume_mark

WINDOW = 5.0


def test_a_publish_counts_as_safe_only_after_the_detection_window() -> None:
    lane = Progress(start=100, window_s=WINDOW)
    lane.published(10.0, 120)
    lane.published(12.0, 130)
    assert lane.safe(14.0) == 100  # both too recent: the link may have been dead already
    assert lane.safe(15.5) == 120
    assert lane.safe(30.0) == 130


def test_a_failed_publish_caps_the_mark_below_it() -> None:
    lane = Progress(start=100, window_s=WINDOW)
    lane.published(1.0, 110)
    lane.failed(111)
    lane.published(2.0, 120)  # a later success does not cover the failed rows
    assert lane.safe(100.0) == 110


def test_the_mark_waits_for_older_jobs_and_deferred_devices() -> None:
    lane = Progress(start=500, window_s=WINDOW)
    lane.published(1.0, 600)
    job = Job("resume", 200, 500, Progress(200, WINDOW))
    job.advanced(300, published_at=2.0)
    assert resume_mark(lane, [job], {}, now=3.0, idle_mark=0) == 200
    assert resume_mark(lane, [job], {}, now=8.0, idle_mark=0) == 300
    assert resume_mark(lane, [job], {"vfd2": 250}, now=8.0, idle_mark=0) == 249
    job.advanced(500, published_at=9.0)
    job.done = True
    assert resume_mark(lane, [job], {}, now=20.0, idle_mark=0) == 600  # settled: no longer holds it


def test_replay_jobs_never_hold_the_mark_and_an_idle_node_keeps_its_mark() -> None:
    lane = Progress(start=50, window_s=WINDOW)
    replay = Job("replay", 0, 40, Progress(0, WINDOW), from_ms=0)
    assert resume_mark(lane, [replay], {}, now=1.0, idle_mark=0) == 50
    assert resume_mark(None, [], {}, now=1.0, idle_mark=42) == 42


def test_a_step_that_published_nothing_is_as_safe_as_the_last_publish() -> None:
    job = Job("device", 10, 90, Progress(10, WINDOW), device="vfd1")
    job.advanced(40, published_at=None)  # only other devices' rows: nothing of ours in flight
    assert job.progress.safe(0.0) == 40
    job.advanced(60, published_at=3.0)
    job.advanced(90, published_at=None)
    assert job.progress.safe(5.0) == 40
    assert job.progress.safe(8.5) == 90
