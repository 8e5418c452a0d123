"""Services: run configuration, the training loop, the run directory and the CLI."""
