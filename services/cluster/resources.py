"""Can the run's learner and rollout actors ever be placed? Checked once connected, before
anything starts: Ray itself would leave an actor no node can hold pending forever."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import ray

from learner.config import ConfigError
from learner.remote import gpus_for
from services.config import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Demand:
    """What one actor asks a single node for."""

    what: str
    fields: str
    """The config fields that set it: what the user can change."""
    resources: Mapping[str, float]


def demands(config: RunConfig, learner_gpus: float) -> list[Demand]:
    learner = {"CPU": config.learner.num_cpus, "GPU": learner_gpus}
    fields = "learner.num_cpus, learner.device"
    if config.learner.device == "auto" and learner_gpus:
        fields += " (auto takes the cluster's GPU; set cpu to train on a CPU node)"
    return [
        Demand("the learner", fields, learner),
        Demand("a rollout actor", "actors.num_cpus", {"CPU": config.actors.num_cpus}),
    ]


def unplaceable(wanted: Iterable[Demand], nodes: list[Mapping[str, float]]) -> list[str]:
    """One message per demand that no node shape can hold."""
    problems = []
    for demand in wanted:
        need = {k: v for k, v in demand.resources.items() if v > 0}
        if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
            continue
        shapes = sorted({_shape({k: n.get(k, 0) for k in ("CPU", "GPU")}) for n in nodes})
        problems.append(
            f"{demand.what} asks one node for {_shape(need)} ({demand.fields}), but no node has "
            f"that (nodes: {', '.join(shapes) or 'none'})"
        )
    return problems


def check_resources(config: RunConfig, can_grow: bool) -> None:
    """Raise ConfigError if the learner or a rollout actor fits on no node. On a cluster that
    may add nodes we cannot see the shape of (an autoscaler without a published config), only
    warn: the node may be on its way."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    groups = _autoscaler_node_shapes()
    problems = unplaceable(demands(config, gpus_for(config.learner)), nodes + groups)
    if not problems:
        return
    if can_grow and not groups:
        log.warning(
            "%s. Waiting for the autoscaler to add such a node (`troupe stop` ends the run).",
            "; ".join(problems),
        )
        return
    raise ConfigError(
        "; ".join(problems) + ". Lower the request, or add a node that has it to the cluster"
    )


def _autoscaler_node_shapes() -> list[dict[str, float]]:
    """Node types an autoscaler (v2, KubeRay) may launch, from the config it publishes in
    the GCS; empty when there is none. Ray Train reads the same record."""
    try:
        from ray._private.state import state

        cluster_config = state.get_cluster_config()
    except Exception:  # a private API: never let it break a run
        return []
    if cluster_config is None:
        return []
    return [
        dict(group.resources) for group in cluster_config.node_group_configs if group.max_count != 0
    ]


def _shape(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in resources.items()) + "}"
