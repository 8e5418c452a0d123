"""Rollout actors: vectorised gymnasium envs stepped by a CPU copy of the policy."""
