"""Scaling studies and Slurm jobs: job-script rendering, local/Slurm sweeps, the cost model and the report."""
