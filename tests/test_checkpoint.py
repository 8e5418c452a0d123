"""Checkpoint files: atomic, the last K kept, a torn or corrupt one skipped; on a local
folder and on an S3-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.config import ConfigError
from services.config import load_config
from services.storage.checkpoints import Checkpoints, ForeignFolder, StorageError
from services.storage.rundir import RunDir
from services.storage.untrusted import UnsafeTorch, check_torch


def _save(store: Checkpoints, updates: int) -> None:
    learner = {"model": {"w": torch.full((3,), float(updates))}, "version": updates}
    store.save(learner, {"frames": 10 * updates, "updates": updates}, {"name": "t"})


def _names(store: Checkpoints) -> list[str]:
    return [Path(p).name for p in store.paths()]


def _keeps_the_last_k(store: Checkpoints) -> None:
    assert store.latest() is None
    for updates in (5, 10, 15):
        _save(store, updates)
    assert _names(store) == ["ckpt-000000010.pt", "ckpt-000000015.pt"]
    latest = store.latest()
    assert latest.name == "ckpt-000000015.pt"
    assert latest.counters == {"frames": 150, "updates": 15}
    assert latest.learner["version"] == 15 and latest.config == {"name": "t"}
    assert torch.equal(latest.learner["model"]["w"], torch.full((3,), 15.0))


def _skips_torn_and_foreign(store: Checkpoints, caplog) -> None:
    for updates in (5, 10, 15):
        _save(store, updates)
    newest, middle, _ = reversed(store.paths())
    store.fs.pipe_file(newest, store.fs.cat_file(newest)[:100])  # torn
    with store.fs.open(middle, "wb") as out:
        torch.save({"format": 99}, out)  # written by something else
    assert store.latest().counters["updates"] == 5
    assert "ckpt-000000015.pt" in caplog.text and "ckpt-000000010.pt" in caplog.text


def test_the_newest_is_loaded_and_only_the_last_k_are_kept(tmp_path):
    store = Checkpoints.for_run(tmp_path / "run-1", keep=2)
    _keeps_the_last_k(store)
    assert store.folder == str(tmp_path / "run-1" / "checkpoints")
    assert not list((tmp_path / "run-1" / "checkpoints").glob("*.tmp"))


def test_a_torn_or_foreign_checkpoint_is_skipped_for_the_one_before(tmp_path, caplog):
    _skips_torn_and_foreign(Checkpoints.for_run(tmp_path, keep=3), caplog)


def test_a_leftover_temp_file_is_not_a_checkpoint(tmp_path):
    store = Checkpoints.for_run(tmp_path)
    _save(store, 5)
    (tmp_path / "checkpoints" / "ckpt-000000010.tmp").write_bytes(b"half a write")
    assert store.latest().counters["updates"] == 5


def test_a_failed_save_leaves_no_temp_file_and_the_old_set(tmp_path, monkeypatch):
    """A full disk mid-write: the save raises, the checkpoints before stay, and no temp file
    is left to fill the disk further (temp names are per writer)."""
    import os

    store = Checkpoints.for_run(tmp_path)
    _save(store, 5)

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _save(store, 10)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt-000000005.pt"]
    assert store.latest().counters["updates"] == 5


# --- one folder, one run --------------------------------------------------------------------


def _payload(updates: int, run_id: str | None) -> dict:
    """A checkpoint file's content as another writer would make it (run_id None: the form
    before checkpoints named their run)."""
    payload = {
        "format": 1,
        "learner": {"model": {"w": torch.zeros(3)}, "version": updates},
        "counters": {"frames": 10 * updates, "updates": updates},
        "config": {"name": "t"},
    }
    return payload if run_id is None else {**payload, "run_id": run_id}


def test_two_runs_of_one_id_never_share_a_storage_folder(tmp_path):
    """Runs on two machines whose run directories have one name: the second is refused
    before it writes anything, and so is a run of another id pointed at the folder."""
    storage = str(tmp_path / "store")
    first = Checkpoints.for_run(tmp_path / "host-a" / "cart-1", storage, keep=1)
    first.claim(new=True)
    _save(first, 5)
    second = Checkpoints.for_run(tmp_path / "host-b" / "cart-1", storage, keep=1)
    with pytest.raises(ForeignFolder, match=r"store/cart-1 belongs to another run 'cart-1'"):
        second.claim(new=True)
    other = Checkpoints(f"{storage}/cart-1", run_id="cart-2")
    with pytest.raises(ForeignFolder, match=r"run 'cart-1', not to this run \('cart-2'\)"):
        other.claim(new=False)
    again = Checkpoints.for_run(tmp_path / "host-b" / "cart-1", storage, keep=1)
    again.claim(new=False)  # the same run, continued (a resume, --run-id) from another host
    assert again.latest().counters["updates"] == 5
    assert _names(first) == ["ckpt-000000005.pt"]


def test_a_planted_checkpoint_is_neither_loaded_nor_counted_nor_deleted(tmp_path, caplog):
    store = Checkpoints.for_run(tmp_path / "run-1", keep=2)
    store.claim(new=True)
    _save(store, 5)
    folder = Path(store.folder)
    torch.save(_payload(999_999_999, "intruder"), folder / "ckpt-999999999.pt")
    torch.save(_payload(999_999_998, None), folder / "ckpt-999999998.pt")  # names no run
    _save(store, 10)
    _save(store, 15)
    assert _names(store) == [
        "ckpt-000000010.pt",
        "ckpt-000000015.pt",  # the last 2 of this run's: the planted ones did not count
        "ckpt-999999998.pt",
        "ckpt-999999999.pt",  # and are not this run's to delete
    ]
    assert store.latest().counters["updates"] == 15
    fresh = Checkpoints.for_run(tmp_path / "run-1", keep=2)  # a restart reads them anew
    assert fresh.latest().counters["updates"] == 15
    assert "ckpt-999999999.pt: not a checkpoint of this run ('run-1') but of 'intruder'" in (
        caplog.text
    )
    assert "ckpt-999999998.pt: not a checkpoint of this run" in caplog.text


def test_a_folder_with_files_and_no_owner_is_refused(tmp_path):
    folder = tmp_path / "run-1" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("someone's data")
    store = Checkpoints.for_run(tmp_path / "run-1")
    for new in (True, False):
        with pytest.raises(ForeignFolder, match=r"not empty \(results.csv\) and no run owns it"):
            store.claim(new=new)
    assert [p.name for p in folder.iterdir()] == ["results.csv"]


def test_a_folder_from_before_owner_markers_is_adopted_by_its_resumed_run(tmp_path):
    folder = tmp_path / "run-1" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(_payload(5, None), folder / "ckpt-000000005.pt")
    store = Checkpoints.for_run(tmp_path / "run-1", keep=1)
    with pytest.raises(ForeignFolder):
        store.claim(new=True)  # a new run never takes a folder with files
    assert store.latest().counters["updates"] == 5
    store.claim(new=False)
    torch.save(_payload(7, None), folder / "ckpt-000000007.pt")  # planted after adoption
    restarted = Checkpoints.for_run(tmp_path / "run-1", keep=1)
    assert restarted.latest().counters["updates"] == 5  # adopted; the later one is not ours
    _save(restarted, 10)
    assert _names(restarted) == ["ckpt-000000007.pt", "ckpt-000000010.pt"]


def test_run_ids_are_unique_across_machines(tmp_path):
    import re

    names = {RunDir.create(tmp_path / f"host-{n}", "cart").path.name for n in range(20)}
    assert len(names) == 20  # same name, same second, 20 machines
    assert all(re.fullmatch(r"cart-\d{8}-\d{6}-[0-9a-f]{6}", name) for name in names)


def test_a_named_run_refuses_another_runs_folder_before_ray_starts(tmp_path, capsys):
    from services.cli.main import main

    storage = tmp_path / "store"
    Checkpoints(f"{storage}/nightly", run_id="someone-else").claim(new=True)
    code = main(["train", "--run-id", "nightly", "--address", "ray://nowhere:1",
                 "--set", f"train.run_root={tmp_path / 'runs'}",
                 "--set", f"checkpoint.storage={storage}"])  # fmt: skip
    assert code == 2
    assert "belongs to run 'someone-else', not to this run ('nightly')" in capsys.readouterr().err


def test_s3_storage_keeps_the_last_k_under_the_run_id(s3_bucket):
    storage = s3_bucket["url"] + "/team/runs/"
    store = Checkpoints.for_run("/runs/cartpole-1", storage, 2, s3_bucket["options"])
    store.check()
    _keeps_the_last_k(store)
    assert store.latest().path == s3_bucket["url"] + "/team/runs/cartpole-1/ckpt-000000015.pt"
    # What a fresh process (a resumed run, another node) sees: no cached filesystem.
    fresh = {**s3_bucket["options"], "skip_instance_cache": True}
    again = Checkpoints.for_run("/elsewhere/cartpole-1", storage, 2, fresh)
    assert again.fs is not store.fs
    assert again.latest().counters["updates"] == 15
    assert _names(again) == ["ckpt-000000010.pt", "ckpt-000000015.pt"]  # no probe file left


def test_s3_storage_skips_a_torn_or_foreign_checkpoint(s3_bucket, caplog):
    store = Checkpoints.for_run("run-2", s3_bucket["url"], 3, s3_bucket["options"])
    _skips_torn_and_foreign(store, caplog)


def test_unwritable_storage_is_an_error_naming_the_location(s3_bucket):
    missing = Checkpoints("s3://no-such-bucket/x", storage_options=s3_bucket["options"])
    with pytest.raises(StorageError, match="s3://no-such-bucket/x.*cannot be written"):
        missing.check()
    with pytest.raises(StorageError, match="nope://x"):
        Checkpoints("nope://x")


@pytest.mark.parametrize(
    ("storage", "match"),
    [
        ("relative/ckpts", "absolute path"),
        ("nope://bucket/x", "a URL fsspec knows"),
        ("s3://", "a URL fsspec knows"),
    ],
)
def test_storage_is_validated_in_the_config(storage, match):
    with pytest.raises(ConfigError, match=rf"checkpoint\.storage=.*{match}"):
        load_config(None, [f"checkpoint.storage={storage}"])
    load_config(None, ["checkpoint.storage=s3://bucket/prefix"])
    load_config(None, ["checkpoint.storage=/mnt/shared/ckpts"])


def test_nothing_is_loaded_from_storage_with_an_unsafe_torch(tmp_path, monkeypatch):
    """torch < 2.10 may run code or corrupt memory loading a crafted file: checkpoints and
    models are refused, with the upgrade to make, before any file is loaded."""
    check_torch("2.10.0")
    check_torch("2.13.0+cpu")
    (tmp_path / "model.pt").write_bytes(b"crafted")
    store = Checkpoints.for_run(tmp_path / "run")
    _save(store, 5)
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(UnsafeTorch, match=r"torch 2.5.1\+cpu .* pip install 'torch>=2.10'"):
        store.latest()  # not skipped as an unreadable checkpoint
    with pytest.raises(UnsafeTorch, match="CVE-2025-32434"):
        RunDir(tmp_path).load_model()


def _planted_run(tmp_path) -> str:
    """STORAGE_URL/RUN_ID of a checkpoint whose config someone else with write access to the
    storage wrote: its checkpoints would go to their server, its env imports their module."""
    config = load_config(None, [f"train.run_root={tmp_path / 'runs'}"]).to_dict()
    config["checkpoint"]["storage_options"] = {"endpoint_url": "http://attacker.example"}
    config["env"]["id"] = "evil_module:Env-v0"
    url = f"file://{tmp_path}/store/run-1"
    learner = {"model": {"w": torch.zeros(3)}, "version": 1}
    Checkpoints(url).save(learner, {"frames": 10, "updates": 1}, config)
    return url


def test_a_resume_from_storage_takes_storage_settings_from_the_command_line(tmp_path):
    from services.cli.train import _resumed

    url = _planted_run(tmp_path)
    config, latest, run_path = _resumed(url, ["env.id=CartPole-v1"])
    assert config.checkpoint.storage == f"file://{tmp_path}/store"
    assert config.checkpoint.storage_options == {}  # not the checkpoint's endpoint
    assert latest.counters["updates"] == 1 and run_path == tmp_path / "runs" / "run-1"


def test_a_resume_from_storage_imports_no_module_unless_allowed(tmp_path):
    from services.cli.train import _resumed

    url = _planted_run(tmp_path)
    with pytest.raises(ConfigError, match="would import the module 'evil_module'; pass --allow"):
        _resumed(url, [])
    config, _, _ = _resumed(url, [], allow_env_import=True)
    assert config.env.id == "evil_module:Env-v0"  # imported only when the run starts


def test_a_named_run_continues_from_its_newest_checkpoint_with_the_same_env_only(tmp_path):
    from services.cli.train import _named

    runs = tmp_path / "runs"
    config, latest, run_path = _named("nightly", None, [f"train.run_root={runs}"])
    assert latest is None and run_path == runs / "nightly"  # the first time: a new run
    store = Checkpoints.for_run(run_path)
    learner = {"model": {"w": torch.zeros(3)}, "version": 4}
    store.save(learner, {"frames": 40, "updates": 4}, config.to_dict())
    _, latest, _ = _named("nightly", None, [f"train.run_root={runs}"])
    assert latest.counters["updates"] == 4  # run again: continued
    with pytest.raises(ConfigError, match=r"--run-id nightly: that run trains env=.*CartPole"):
        _named("nightly", None, [f"train.run_root={runs}", "env.id=Pendulum-v1"])


def test_a_continued_run_finds_unwritable_storage_at_once(tmp_path, monkeypatch):
    store = Checkpoints.for_run(tmp_path / "run-1")
    store.claim(new=True)

    def read_only(path, value, **kwargs):
        raise PermissionError(13, "Access Denied")

    again = Checkpoints.for_run(tmp_path / "run-1")
    monkeypatch.setattr(again.fs, "pipe_file", read_only)
    with pytest.raises(StorageError, match="cannot be written: .*Access Denied"):
        again.claim(new=False)  # its own folder: still checked before training


def test_adoption_ignores_the_temp_file_of_an_interrupted_write(tmp_path):
    folder = tmp_path / "run-1" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(_payload(5, None), folder / "ckpt-000000005.pt")
    (folder / ".ckpt-000000010.pt.4242.ab12cd34.tmp").write_bytes(b"half a write")
    Checkpoints.for_run(tmp_path / "run-1").claim(new=False)
    assert Checkpoints.for_run(tmp_path / "run-1").latest().counters["updates"] == 5


def test_a_storage_error_while_pruning_is_retried_at_the_next_save(tmp_path, monkeypatch):
    old = Checkpoints.for_run(tmp_path / "run-1", keep=1)
    old.claim(new=True)
    _save(old, 5)
    store = Checkpoints.for_run(tmp_path / "run-1", keep=1)  # a restart: 5 not yet known
    real, calls = store.fs.cat_file, []

    def flaky(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise ConnectionError("network down")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(store.fs, "cat_file", flaky)
    _save(store, 10)  # could not tell whose 5 is: left for now
    assert _names(store) == ["ckpt-000000005.pt", "ckpt-000000010.pt"]
    _save(store, 15)
    assert _names(store) == ["ckpt-000000015.pt"]


def test_a_resume_from_another_runs_folder_says_so_before_reading_it(tmp_path):
    from services.cli.train import _resumed

    url = _planted_run(tmp_path)  # a folder of run "run-1"
    Checkpoints(url.replace("run-1", "run-2"), run_id="someone").claim(new=True)
    with pytest.raises(ForeignFolder, match="belongs to run 'someone', not to this run"):
        _resumed(url.replace("run-1", "run-2"), [])


@pytest.mark.parametrize("bad", ["../escape", ".hidden", "a b", "x" * 129, ""])
def test_a_bad_run_id_is_refused_naming_the_flag(bad, capsys):
    from services.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--run-id", bad])
    assert exit_.value.code == 2
    assert "--run-id" in capsys.readouterr().err
