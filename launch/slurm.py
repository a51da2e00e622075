#!/usr/bin/env python3
"""Train hdjax on a SLURM GPU cluster: write an sbatch script and submit it (stdlib only).

    python launch/slurm.py --nodes=2 --gpus-per-node=8 --time=2-00:00:00 --partition=gpu \
        --config=configs/pifuhd.py --workdir=/shared/runs/hd -- --config.train.num_steps=200000

Everything after `--` goes to `hdjax.main` unchanged. `--dry-run` prints the script (and, as a
last comment line, the sbatch command) without writing or submitting anything.

How the processes find each other (`jax.distributed.initialize()` without arguments):
- the coordinator address is set explicitly, `JAX_COORDINATOR_ADDRESS=<first node>:<port>`, with
  the first node from `scontrol show hostnames "$SLURM_JOB_NODELIST"`. JAX's own SLURM detection
  parses the node list string itself and drops anything after a bracketed range (`gpu[1-4]-ib`
  gives `gpu1`); scontrol is authoritative. `--port` is for sites that open only some ports.
  Process 0 (the coordinator) runs on that node: srun's block distribution gives it task 0.
- the process count and id come from JAX's SLURM auto-detection: srun sets `SLURM_NTASKS`,
  `SLURM_PROCID` and `SLURM_LOCALID` in every task; they are per task, so a value exported by
  the batch script could not carry them.
- local devices: one process per GPU lets JAX use GPU `SLURM_LOCALID` (its SLURM default; every
  task sees all the node's GPUs because GPUs are requested per node, not per task). One process
  per node exports `JAX_LOCAL_DEVICE_IDS=0,…,G-1`, without which JAX's default would give the
  node's single process GPU 0 only.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

from launch_args import LaunchError, Parser, parse

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TIME = re.compile(r"^(\d+-\d+(:\d\d){0,2}|\d+(:\d\d){0,2})$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def tasks_per_node(args: argparse.Namespace) -> int:
    return args.gpus_per_node if args.per == "gpu" else 1


def train_argv(args: argparse.Namespace) -> list[str]:
    """The hdjax.main command line; `gs://` paths and overrides pass through unchanged."""
    argv = [args.python, "-u", "-m", "hdjax.main", f"--config={args.config}"]
    argv.append(f"--workdir={args.workdir}")
    if args.mode:
        argv.append(f"--mode={args.mode}")
    return argv + list(args.passthrough)


def render_script(args: argparse.Namespace) -> str:
    """The sbatch script text."""
    ntasks = tasks_per_node(args)
    log_dir = os.path.abspath(os.path.join(args.repo_dir, args.log_dir))
    per = "one process per GPU" if args.per == "gpu" else "one process per node"
    sbatch = [
        f"--job-name={args.job_name}",
        f"--nodes={args.nodes}",
        f"--ntasks-per-node={ntasks}",
        f"--gres=gpu:{args.gpus_per_node}",
        f"--time={args.time}",
    ]
    if args.cpus_per_task:
        sbatch.append(f"--cpus-per-task={args.cpus_per_task}")
    if args.partition:
        sbatch.append(f"--partition={args.partition}")
    if args.account:
        sbatch.append(f"--account={args.account}")
    sbatch.append(f"--output={log_dir}/%x-%j.out")
    if args.signal_grace:
        # SIGTERM reaches the training processes before the time limit: they checkpoint.
        sbatch.append(f"--signal=TERM@{args.signal_grace}")
    if args.requeue:
        sbatch.append("--requeue")
    sbatch += args.sbatch_arg

    port = str(args.port) if args.port else "$((61440 + SLURM_JOB_ID % 4096))"
    lines = [
        "#!/bin/bash",
        f"# Written by launch/slurm.py: hdjax on {args.nodes} node(s) x "
        f"{args.gpus_per_node} GPU(s), {per}.",
        *(f"#SBATCH {shlex.quote(s)}" for s in sbatch),
        "",
        "set -euo pipefail",
        f"cd {shlex.quote(os.path.abspath(args.repo_dir))}",
    ]
    if args.venv:
        lines.append(f"source {shlex.quote(os.path.join(args.venv, 'bin', 'activate'))}")
    lines += [f"export {k}={shlex.quote(v)}" for k, v in (e.split("=", 1) for e in args.env)]
    lines += [
        "",
        "# Process 0, the coordinator, runs on the first node (srun's block distribution);",
        "# the process count and id come from SLURM_NTASKS / SLURM_PROCID through JAX's",
        "# SLURM detection in jax.distributed.initialize().",
        'head_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'export JAX_COORDINATOR_ADDRESS="${{head_node}}:{port}"',
    ]
    if args.per == "node":
        ids = ",".join(str(i) for i in range(args.gpus_per_node))
        lines += [
            "# One process drives all GPUs of its node (JAX would default to GPU SLURM_LOCALID).",
            f"export JAX_LOCAL_DEVICE_IDS={ids}",
        ]
    lines += [
        'echo "hdjax: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, '
        f'{args.nodes * ntasks} processes, coordinator $JAX_COORDINATOR_ADDRESS"',
        "",
    ]
    srun = [
        "srun",
        f"--nodes={args.nodes}",
        f"--ntasks-per-node={ntasks}",
        "--kill-on-bad-exit=1",
        f"--output={log_dir}/%x-%j-%t.out",
    ]
    if args.cpus_per_task:  # srun no longer inherits it from sbatch (SLURM >= 22.05)
        srun.append(f"--cpus-per-task={args.cpus_per_task}")
    lines.append(shlex.join([*srun, *train_argv(args)]))
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="slurm.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="e.g. configs/pifuhd.py or ...:tiny")
    p.add_argument("--workdir", required=True, help="shared directory or gs://bucket/dir")
    p.add_argument("--mode", default="", help="hdjax.main --mode (default: its own, train)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument(
        "--per",
        choices=["gpu", "node"],
        default="gpu",
        help="one process per GPU (default) or one per node",
    )
    p.add_argument("--cpus-per-task", type=int, default=0)
    p.add_argument("--time", default="24:00:00", help="SLURM time limit, e.g. 2-00:00:00")
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--job-name", default="hdjax")
    p.add_argument("--port", type=int, default=0, help="coordinator port (default from job id)")
    p.add_argument(
        "--signal-grace",
        type=int,
        default=300,
        help="seconds before the time limit at which SIGTERM asks for a checkpoint (0: off)",
    )
    p.add_argument("--requeue", action="store_true", help="requeue when preempted")
    p.add_argument("--python", default="python", help="interpreter on the nodes")
    p.add_argument("--venv", default="", help="virtualenv to activate on the nodes")
    p.add_argument("--repo-dir", default=REPO_ROOT, help="checkout on the shared filesystem")
    p.add_argument("--log-dir", default="slurm_logs", help="relative to --repo-dir")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--sbatch-arg", action="append", default=[], help="extra #SBATCH line, e.g. --qos=high"
    )
    p.add_argument("--script", default="", help="where to write the script")
    p.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    return p


def validate(args: argparse.Namespace) -> None:
    for flag in ("nodes", "gpus_per_node"):
        if getattr(args, flag) < 1:
            raise LaunchError(f"--{flag.replace('_', '-')}={getattr(args, flag)}: must be >= 1")
    if args.cpus_per_task < 0 or args.signal_grace < 0:
        raise LaunchError("--cpus-per-task and --signal-grace must be >= 0")
    if not _TIME.match(args.time):
        raise LaunchError(
            f"--time={args.time!r}: expected minutes, HH:MM:SS or D-HH:MM:SS (SLURM format)"
        )
    if args.port and not 1024 <= args.port <= 65535:
        raise LaunchError(f"--port={args.port}: expected 1024..65535")
    if not _NAME.match(args.job_name):
        raise LaunchError(f"--job-name={args.job_name!r}: use letters, digits, '.', '_' or '-'")
    for item in args.env:
        if not _ENV.match(item):
            raise LaunchError(f"--env={item!r}: expected KEY=VALUE")
    for item in args.sbatch_arg:
        if not item.startswith("--") or "\n" in item:
            raise LaunchError(f"--sbatch-arg={item!r}: expected one option like --qos=high")
    for flag, value in (("--config", args.config), ("--workdir", args.workdir)):
        if not value.strip():
            raise LaunchError(f"{flag} is empty")
    if not os.path.isdir(args.repo_dir):
        raise LaunchError(f"--repo-dir={args.repo_dir}: no such directory")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse("slurm.py", argv, build_parser, validate)
    if args is None:
        return 2
    script = render_script(args)
    path = args.script or os.path.join(args.repo_dir, args.log_dir, f"{args.job_name}.sbatch")
    submit = ["sbatch", path]
    if args.dry_run:
        print(script + f"# {shlex.join(submit)}")
        return 0
    os.makedirs(os.path.join(args.repo_dir, args.log_dir), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(script)
    print(f"wrote {path}\n{shlex.join(submit)}", flush=True)
    try:
        return subprocess.run(submit, check=False).returncode
    except FileNotFoundError:
        print(
            "slurm.py: error: sbatch not found on PATH (run this on a login node)", file=sys.stderr
        )
        return 127


if __name__ == "__main__":
    sys.exit(main())
