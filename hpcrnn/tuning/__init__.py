"""Hyperparameter sweeps: a spec of a base config, a grid and random distributions expanded into trials, each
a full `hpcrnn train` run here or as a Slurm job-array task, stopped early by ASHA rungs (docs/sweeps.md)."""
