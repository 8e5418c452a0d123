"""Placement feasibility: which of the run's actors no node can ever hold."""

from __future__ import annotations

import pytest

from learner.config import ConfigError
from services.cluster.resources import check_resources, demands, unplaceable
from services.config import load_config

CPU_NODE = {"CPU": 8.0, "memory": 1e10}
GPU_NODE = {"CPU": 4.0, "GPU": 1.0}


def _demands(*overrides: str, gpus: float = 0.0):
    return demands(load_config(None, list(overrides)), gpus)


def test_a_run_that_fits_has_no_problems():
    assert unplaceable(_demands(), [CPU_NODE]) == []
    assert unplaceable(_demands("learner.num_cpus=4", gpus=1), [CPU_NODE, GPU_NODE]) == []


def test_an_actor_bigger_than_every_node_is_named_with_its_field():
    (problem,) = unplaceable(_demands("actors.num_cpus=16"), [CPU_NODE, GPU_NODE])
    assert problem.startswith("a rollout actor asks one node for {CPU: 16} (actors.num_cpus)")
    assert problem.endswith("(nodes: {CPU: 4, GPU: 1}, {CPU: 8, GPU: 0})")


def test_the_learner_needs_its_cpus_and_gpu_on_one_node():
    # A GPU node with too few CPUs, and a CPU node without a GPU: neither holds the learner.
    wanted = _demands("learner.num_cpus=6", "learner.device=cuda", gpus=1)
    (problem,) = unplaceable(wanted, [CPU_NODE, GPU_NODE])
    assert "the learner asks one node for {CPU: 6, GPU: 1} (learner.num_cpus, learner.device)" in (
        problem
    )


def test_a_gpu_learner_without_any_gpu():
    (problem,) = unplaceable(_demands("learner.device=cuda", gpus=1), [CPU_NODE])
    assert "{CPU: 1, GPU: 1} (learner.num_cpus, learner.device)" in problem
    assert problem.endswith("(nodes: {CPU: 8, GPU: 0})")


def test_auto_device_says_how_to_train_on_cpu_instead():
    (problem,) = unplaceable(_demands("learner.num_cpus=6", gpus=1), [CPU_NODE, GPU_NODE])
    assert "set cpu to train on a CPU node" in problem


def test_no_nodes_at_all():
    learner, actor = unplaceable(_demands(), [])
    assert learner.startswith("the learner asks one node for {CPU: 1}")
    assert actor.startswith("a rollout actor asks one node for {CPU: 1}")
    assert learner.endswith("(nodes: none)") and actor.endswith("(nodes: none)")


class _Cluster:
    """What `check_resources` reads from Ray, faked: nodes and autoscaler node types."""

    def __init__(self, monkeypatch, nodes, groups=(), gpus=0.0):
        import services.cluster.resources as R

        monkeypatch.setattr(R.ray, "nodes", lambda: nodes)
        monkeypatch.setattr(R, "_autoscaler_node_shapes", lambda: list(groups))
        monkeypatch.setattr(R, "gpus_for", lambda config: gpus)


def _node(alive=True, **resources):
    return {"Alive": alive, "Resources": {k: float(v) for k, v in resources.items()}}


def test_a_fixed_cluster_that_cannot_hold_an_actor_is_a_config_error(monkeypatch):
    _Cluster(monkeypatch, [_node(CPU=2), _node(alive=False, CPU=64)])  # the dead node is gone
    with pytest.raises(ConfigError, match=r"\(actors.num_cpus\).*nodes: \{CPU: 2, GPU: 0\}"):
        check_resources(load_config(None, ["actors.num_cpus=4"]), can_grow=False)
    check_resources(load_config(None, ["actors.num_cpus=2"]), can_grow=False)


def test_node_types_an_autoscaler_publishes_count_and_still_decide(monkeypatch):
    big = {"CPU": 16.0}
    _Cluster(monkeypatch, [_node(CPU=2)], groups=[big])
    check_resources(load_config(None, ["actors.num_cpus=8"]), can_grow=True)  # can come up
    with pytest.raises(ConfigError, match="actors.num_cpus"):
        check_resources(load_config(None, ["actors.num_cpus=32"]), can_grow=True)


def test_a_cluster_that_may_grow_unseen_only_warns(monkeypatch, caplog):
    _Cluster(monkeypatch, [_node(CPU=2)], gpus=1.0)
    check_resources(load_config(None, ["learner.device=cuda"]), can_grow=True)
    assert "Waiting for the autoscaler" in caplog.text and "learner.device" in caplog.text
