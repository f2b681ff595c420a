"""Everything about a job: specs, rendering, Slurm, requeue, checkpoints, the CLI."""
