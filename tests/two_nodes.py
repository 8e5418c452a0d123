"""A sync run whose compiled graph spans two Ray nodes on this machine, and loses one.

`python -m tests.two_nodes RUN_ROOT AGENT_PORT`, run by tests/test_two_nodes.py in a process of
its own: a driver joins one Ray, and the pytest process's belongs to the shared cluster.
`ray.cluster_utils.Cluster` starts the head (2 CPUs) and a second raylet (1 CPU); to Ray they
are two nodes, so channels between them go through the raylets' push path, as between
machines. The learner starts first, on the driver's node, and one of the two rollout actors
can only fit on the second node. A few compiled rounds in, that node is removed (its raylet
and workers killed, as when a machine is lost); the run goes on with the actor left, and a
node of the same shape is added back, where the replacement actor comes up. Prints one JSON
object for the test: the metrics lines and where each actor ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from learner import metrics as M
from services.cluster.connection import LOCAL_SYSTEM_CONFIG
from services.config import load_config
from services.storage.rundir import RunDir
from services.training import train
from tests.envs import PACED_ID

LOSE_AT = 6
"""The update after which the second node is removed."""
BACK_AFTER = 10
"""Updates with the actor left (the replacement pending, no CPU for it) before a node is back."""


def _placement() -> dict[str, list[str]]:
    """Node id of each live actor, by class name."""
    where: dict[str, list[str]] = {}
    for actor in ray._private.state.actors().values():
        if actor["State"] == "ALIVE":
            where.setdefault(actor["ActorClassName"], []).append(actor["Address"]["NodeID"])
    return where


def main(run_root: str, agent_port: int) -> None:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            # Beside the test session's own Ray: its agent holds the default port.
            "dashboard_agent_listen_port": agent_port,
            "_system_config": LOCAL_SYSTEM_CONFIG,
        },
    )
    second = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        head_id = ray.get_runtime_context().get_node_id()
        config = load_config(
            None,
            [
                f"env.id={PACED_ID}",  # ~15 updates a second: the node change spans updates
                "actors.envs_per_actor=4",
                "actors.segment_length=8",
                "train.total_frames=12800",  # 200 updates of 64 frames
                "train.eval_interval_s=0",  # a paced episode is slow to evaluate
                "train.eval_episodes=1",
                "train.target_return=null",
                "train.sample_timeout_s=30",
                "learner.num_threads=1",
                f"train.run_root={run_root}",
            ],
        )
        run = RunDir.create(Path(run_root), config.name)
        seen: dict[str, object] = {"head": head_id}

        def change_nodes(record: dict) -> None:
            nonlocal second
            updates = record[M.UPDATES]
            if updates == LOSE_AT:
                seen["before"] = _placement()
                seen["lost"] = second.node_id
                cluster.remove_node(second, allow_graceful=False)
            elif updates == LOSE_AT + BACK_AFTER:
                second = cluster.add_node(num_cpus=1)
                seen["back"] = second.node_id
            elif updates == config.train.total_frames // 64 - 1:
                seen["after"] = _placement()

        train(config, run, on_update=change_nodes)
        print(json.dumps({**seen, "lines": run.read_metrics()}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
