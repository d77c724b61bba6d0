"""How processes start and find each other: the rank context, self-launch under torchrun, SLURM jobs."""
