"""A compiled graph whose channels cross two Ray nodes, and the loss of one of them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile

import pytest

from learner import metrics as M
from tests.launcher import ROOT, free_port
from tests.two_nodes import BACK_AFTER, LOSE_AT

pytestmark = pytest.mark.ray


def test_a_compiled_graph_spans_two_nodes_and_goes_on_when_one_is_lost(tmp_path, cli_env):
    # Its own Ray temp folder (short: Ray's socket paths live in it), so that the address
    # file Ray writes there keeps naming the session's cluster.
    ray_tmp = tempfile.mkdtemp(prefix="troupe-2n-")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.two_nodes", str(tmp_path), str(free_port())],
            cwd=ROOT, env={**cli_env, "RAY_TMPDIR": ray_tmp},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    head, lines = out["head"], out["lines"]

    # The learner on the driver's node, one rollout actor on each node: rounds cross nodes.
    assert out["before"]["LearnerActor"] == [head]
    assert sorted(out["before"]["RolloutActor"]) == sorted([head, out["lost"]])
    assert [x[M.COMPILED_ROUND] for x in lines[:LOSE_AT]] == [1] * LOSE_AT

    # The node goes: its actor's segment is dropped once, the replacement waits for a CPU,
    # and training goes on with the actor left (one actor's 32 frames an update).
    alone = lines[LOSE_AT + 1 : LOSE_AT + BACK_AFTER]
    assert {x[M.ACTORS_LIVE] for x in alone} == {1}, [x[M.ACTORS_LIVE] for x in lines]
    assert {x[M.BATCH_FRAMES] for x in alone} == {32}

    # A node is back: the replacement runs there, and rounds are compiled across nodes again.
    assert sorted(out["after"]["RolloutActor"]) == sorted([head, out["back"]])
    last = lines[-1]
    assert (last[M.ACTOR_RESTARTS], last[M.ACTORS_LIVE], last[M.BATCH_FRAMES]) == (1, 2, 64)
    assert last[M.SEGMENTS_DROPPED] >= 1 and last[M.COMPILED_ROUND] == 1
    versions = [x[M.POLICY_VERSION] for x in lines]
    assert versions == list(range(1, len(lines) + 1))  # no update lost or repeated
