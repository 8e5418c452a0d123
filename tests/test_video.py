"""`troupe eval --video`: playable MP4s with a frame per step, for classic control, MuJoCo
and Atari."""

from __future__ import annotations

import re

import imageio.v2 as imageio
import pytest

from actors.envs import env_spaces
from learner.core import PolicyWeights
from learner.model import build_model, state_to_numpy
from services.cli import main
from services.config import load_config
from services.storage.rundir import RunDir


@pytest.mark.parametrize(
    ("path", "overrides", "size"),
    [
        ("configs/cartpole.yaml", [], (600, 400)),
        ("configs/hopper.yaml", [], (480, 480)),
        # A random Pong game lasts thousands of steps: cut at 40.
        (
            "configs/pong.yaml",
            ["env.vectorization=sync", "env.kwargs.max_episode_steps=40"],
            (160, 210),
        ),
    ],
    ids=["classic", "mujoco", "atari"],
)
def test_each_episode_is_a_playable_mp4_with_a_frame_per_step(
    path, overrides, size, tmp_path, capsys
):
    config = load_config(path, overrides)
    model = build_model(config.learner.model, *env_spaces(config.env))
    run = RunDir.create(tmp_path, config.name)
    run.write_config(config)
    run.save_model(PolicyWeights(3, state_to_numpy(model)), frames=0)
    videos = tmp_path / "videos"

    assert main(["eval", str(run.path), "--video", str(videos), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    played = re.findall(r"^(\S+\.mp4): (\d+) steps, return (\S+)$", out, re.M)
    assert len(played) == 2 and "over 2 recorded episodes (policy version 3" in out, out
    assert sorted(p.name for p in videos.glob("*.mp4")) == sorted(
        f"{config.env.id.rpartition(':')[2].replace('/', '-')}-episode-{i}.mp4" for i in (0, 1)
    )
    for file, steps, _ in played:
        reader = imageio.get_reader(file, format="ffmpeg")
        try:
            # The first observation's frame, then one per step.
            assert reader.count_frames() == int(steps) + 1, file
            assert reader.get_meta_data()["size"] == size
            assert reader.get_data(0).std() > 0  # a picture, not a blank frame
        finally:
            reader.close()
