"""Sync rounds as a Ray Compiled Graph: the learner's weights to every actor, a segment from
each back to the learner, in shared-memory channels instead of actor calls."""

from __future__ import annotations

import logging

import ray

from services.training.parts import RunParts

log = logging.getLogger(__name__)


PROBE_TIMEOUT_S = 10.0
"""How long a live actor may take to say whether it is still sampling."""

BUFFERS_LEFT_BUDGET = 512 * 2**20
"""Bytes of channel buffers a run may leave behind in the object store by tearing graphs
down. Ray does not free a compiled graph's channel buffers when the graph is torn down
(ray-project/ray#43836): each lives until the process that wrote it ends, so every rebuild
(an actor replaced, a resize) leaves the surviving learner's and actors' buffers in the
store. Past this budget the run goes on with plain rounds."""


class RoundFailed(RuntimeError):
    """A compiled round gave no update: it is run the plain way (see `CompiledRounds`)."""


class NoGraph(RoundFailed):
    """These actors and learner have no graph (building it failed, and was logged once)."""


class CompiledRounds:
    """One sync round as one execution of a compiled graph:

        learner.publish --weights--> actor_i.sample --segment_i--> learner.learn --> stats
                                                    \\--receipt_i--> driver

    A plain round costs two actor calls, each ~1 ms of submission, scheduling and waking
    processes on a small machine, plus the driver's turn in between; a channel hop takes
    ~0.1 ms and the driver does nothing between sampling and the update (README, *Small
    batches*). The round's policy is exactly the newest, as in a plain round.

    A graph is fixed: it is built for one learner and one set of live actors, and built
    again (~0.3 s) when that changes (a resize, an actor replaced or joined, a learner
    restarted). Outside a round nothing runs in the graph, so checkpoints, evaluation and
    rollbacks call the learner as usual; an update's weights stay in the learner until asked
    for (`LearnerKeeper.weights`).

    Faults are found per actor as in a plain round: a receipt that says the env crashed is
    counted and the update goes ahead without that segment; an actor that raised, died or
    is still sampling when the round's outputs miss `train.sample_timeout_s` (the graph
    answers for the whole round at once, so the actors are asked) is replaced. Unlike a
    plain round, the update then cannot go ahead with the other actors' segments (the graph
    is torn down with them): the round raises `RoundFailed` and the caller runs it plainly.
    So does a learner that died (restarted first, as a plain round does), and a graph that
    cannot be built, which is not tried again until the actors or the learner change. An
    error the learner raised ends the run, as in a plain round. (A learner update longer
    than `train.sample_timeout_s` fails its round the same way.)
    """

    def __init__(self, run: RunParts) -> None:
        self.run = run
        self._graph = None
        self._members: tuple | None = None  # (learner handle, actor ids) of the graph
        self._unbuildable: tuple | None = None  # members whose graph failed to build
        self.buffers_left = 0
        """Bytes of channel buffers that torn-down graphs left in the object store (an
        estimate: see `BUFFERS_LEFT_BUDGET`)."""
        self._buffers = 0  # those of the graph built last
        self._over_budget = False

    def round(self, actors: list) -> dict | None:
        """The round's update statistics, None when no actor delivered a segment (their
        envs crashed). Raises `RoundFailed` when it has to be run plainly."""
        self._build(actors)
        run = self.run
        stats_ref, *receipt_refs = self._graph.execute(None)
        try:  # reads every output of the round at once
            stats = _value(stats_ref, run.config.train.sample_timeout_s)
        except Exception as err:  # timed out, or a process died: find which
            self._blame(actors, err)
            self.close()
            if isinstance(err, TimeoutError):  # Ray's message names its own, unused, timeout
                timeout = run.config.train.sample_timeout_s
                err = f"no answer within train.sample_timeout_s={timeout}s"
            raise RoundFailed(f"a compiled round failed: {err}") from None
        failed = False
        for (actor_id, _), ref in zip(actors, receipt_refs, strict=True):
            receipt = _value(ref, 0)  # already read
            if isinstance(receipt, ray.exceptions.RayTaskError):  # its `sample` raised
                run.sampler.failed(actor_id, receipt)
                failed = True
            else:
                run.sampler.delivered(receipt)
        if failed:
            self.close()
            raise RoundFailed("an actor raised in a compiled round")
        if isinstance(stats, ray.exceptions.RayTaskError):
            self.close()
            raise stats  # the learner's own error ends the run, as in a plain round
        if stats is None:
            run.sampler.close_batch([])
        return run.learner.landed_in_place(stats)

    def _blame(self, actors: list, err: BaseException) -> None:
        """After a round that broke or timed out: replace the actors that died or are still
        sampling (as a plain round would); if none did, see to the learner."""
        run, blamed = self.run, False
        probes = [(actor_id, handle.sampling.remote()) for actor_id, handle in actors]
        for actor_id, probe in probes:
            try:
                sampling = ray.get(probe, timeout=PROBE_TIMEOUT_S)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                run.sampler.failed(actor_id, err)
                blamed = True
            else:
                if sampling:
                    run.sampler.stalled(actor_id)  # killed: the teardown need not wait
                    blamed = True
        if not blamed:
            run.learner.restart_if_dead(err)

    def _build(self, actors: list) -> None:
        """Make sure the graph is the one of this learner and these actors."""
        members = (self.run.learner.handle, tuple(actor_id for actor_id, _ in actors))
        if self._graph is not None and _same(members, self._members):
            return
        self.close()
        if _same(members, self._unbuildable) or self._over_budget:
            raise NoGraph()
        if self.buffers_left >= BUFFERS_LEFT_BUDGET:
            self._over_budget = True
            log.warning(
                "compiled graphs were torn down and built again and again (actors replaced "
                "or resized): Ray keeps a torn-down graph's channel buffers "
                "(ray-project/ray#43836), ~%d MiB now; the run goes on with plain actor calls",
                self.buffers_left // 2**20,
            )
            raise NoGraph()
        from ray.dag import DAGContext, InputNode, MultiOutputNode

        learner = self.run.learner.handle
        with InputNode() as start:
            weights = learner.publish.bind(start)
            calls = [handle.sample.bind(weights) for _, handle in actors]
            stats = learner.learn.bind(*(segment for segment, _ in calls))
            graph = MultiOutputNode([stats, *(receipt for _, receipt in calls)])
        try:
            self._graph = graph.experimental_compile()
        except Exception as err:
            self._unbuildable = members
            log.warning(
                "no compiled graph for these actors (%s): plain actor calls until they change",
                err,
            )
            raise NoGraph() from err
        self._members = members
        # Channels: the input, the weights, a segment and a receipt per actor, the stats;
        # each a ring of `max_inflight_executions` buffers. (A ring of one would hold a tenth,
        # but Ray 2.60 then fails to wake readers at teardown once a channel has grown past
        # its first buffer: Pong's weights hung the run's end.)
        ctx = DAGContext.get_current()
        self._buffers = (3 + 2 * len(actors)) * ctx.buffer_size_bytes * ctx.max_inflight_executions

    def close(self) -> None:
        """Tear the graph down (the actors and the learner live on)."""
        graph, self._graph, self._members = self._graph, None, None
        if graph is not None:
            self.buffers_left += self._buffers
            try:
                graph.teardown()
            except Exception as err:  # a member already dead: nothing left to stop
                log.debug("compiled graph teardown: %s", err)


def _value(ref, timeout_s: float):
    """A compiled round's output, or the error its task raised (as a value: each output of
    a round can be read once)."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.RayTaskError as err:
        return err


def _same(a: tuple | None, b: tuple | None) -> bool:
    return a is not None and b is not None and a[0] is b[0] and a[1] == b[1]
