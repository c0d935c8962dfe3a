#!/bin/bash
# Multi-node training under SLURM: one torchrun per node, torchrun starts one worker per GPU.
#
#   sbatch scripts/slurm_train.sh configs/gpt2_124m.py --parallelism=fsdp
#   sbatch scripts/slurm_train.sh configs/gpt2_124m.py --parallelism=fsdp --resume   # continue
#
# out_dir must be on a filesystem every node sees (sharded checkpoints: each rank writes its own shard
# into the same directory). See docs/multinode.md for the NCCL settings.
#SBATCH --job-name=gpt
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun per node
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@180            # SIGTERM 3 min before the limit: finish the step, checkpoint, exit
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_train.sh CONFIG.py [--key=value ...]}
shift
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}

export OMP_NUM_THREADS=$((SLURM_CPUS_PER_TASK / GPUS_PER_NODE))
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1   # a failed/hung collective kills the job instead of hanging it
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}      # INFO once, to see which network NCCL picked
# export NCCL_SOCKET_IFNAME=ib0             # if NCCL/Gloo pick the wrong interface (docs/multinode.md)

srun --kill-on-bad-exit=1 torchrun \
    --nnodes="$SLURM_JOB_NUM_NODES" --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:29500" \
    train.py "$CONFIG" "$@"
