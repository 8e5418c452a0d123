"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow (optional extras)."""
