"""Checkpoint files: atomic, the last K kept, a torn or corrupt one skipped."""

from __future__ import annotations

import torch

from services.checkpoint import Checkpoints


def _save(store: Checkpoints, updates: int) -> None:
    learner = {"model": {"w": torch.full((3,), float(updates))}, "version": updates}
    store.save(learner, {"frames": 10 * updates, "updates": updates}, {"name": "t"})


def test_the_newest_is_loaded_and_only_the_last_k_are_kept(tmp_path):
    store = Checkpoints(tmp_path, keep=2)
    assert store.latest() is None
    for updates in (5, 10, 15):
        _save(store, updates)
    assert [p.name for p in store.paths()] == ["ckpt-000000010.pt", "ckpt-000000015.pt"]
    latest = store.latest()
    assert latest.counters == {"frames": 150, "updates": 15}
    assert latest.learner["version"] == 15 and latest.config == {"name": "t"}
    assert torch.equal(latest.learner["model"]["w"], torch.full((3,), 15.0))
    assert not list(store.folder.glob("*.tmp"))


def test_a_torn_or_foreign_checkpoint_is_skipped_for_the_one_before(tmp_path, caplog):
    store = Checkpoints(tmp_path, keep=3)
    for updates in (5, 10, 15):
        _save(store, updates)
    newest, middle, _ = reversed(store.paths())
    newest.write_bytes(newest.read_bytes()[:100])  # torn
    torch.save({"format": 99}, middle)  # written by something else
    assert store.latest().counters["updates"] == 5
    assert "ckpt-000000015.pt" in caplog.text and "ckpt-000000010.pt" in caplog.text


def test_a_leftover_temp_file_is_not_a_checkpoint(tmp_path):
    store = Checkpoints(tmp_path)
    _save(store, 5)
    (store.folder / "ckpt-000000010.tmp").write_bytes(b"half a write")
    assert store.latest().counters["updates"] == 5
