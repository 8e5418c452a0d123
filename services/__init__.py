"""The service around the learner and the actors, one subpackage per concern:

- `config.py`: the run configuration (one YAML file, frozen dataclasses, CLI overrides);
- `training/`: a run from start to end, its sync and async loops and the parts they drive;
- `storage/`: the run directory, checkpoints and plots;
- `control/`: runs registered on a cluster, their control and metrics (HTTP API, Prometheus);
- `cluster/`: connecting to Ray, checking placement, submitting jobs;
- `cli/`: the `troupe` command; `job.py`: a run as a Ray Job's entrypoint.
"""
