"""Training a run: `run.train` starts the run's parts (`parts.RunParts`: the learner through
`learner_keeper`, the rollout actors through `fleet` and `sampling`, evaluation, checkpoints,
the run's control actor) and hands them to the loop of its mode, `sync_loop` or `async_loop`.
Each loop reads top to bottom; both call `RunParts.landed` when an update lands."""

from services.training.run import TrainResult, check_run, train

__all__ = ["TrainResult", "check_run", "train"]
