"""How processes start, find each other and stop: the rank context and its collectives
(context.py), self-launch under torchrun (local.py), the stop flag and exit code 99 (signals.py),
and the SLURM batch script and scheduler queries (slurm.py). Below engines and measure, which use
the process group; it knows no config, cell or command."""
