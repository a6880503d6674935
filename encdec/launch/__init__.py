"""Launchers for `encdec train`: local multi-process, SLURM, Cloud TPU VM pod slices.

    python -m encdec.launch.local  --num-processes 2 --devices-per-process 4 -- --workdir runs/x
    python -m encdec.launch.slurm  --nodes 2 --gpus-per-node 8 --submit -- --workdir runs/x
    python -m encdec.launch.tpu_vm --tpu NAME --zone ZONE -- --workdir /shared/runs/x

Every launcher takes `--dry-run` (print exactly what would run, run nothing) and passes all
arguments after `--` to `encdec train` unchanged. See README.md in this folder.
"""
