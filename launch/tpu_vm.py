#!/usr/bin/env python3
"""Train hdjax on a Cloud TPU VM or pod slice through `gcloud` (stdlib only).

    python launch/tpu_vm.py create --name=hd --zone=us-central2-b --accelerator-type=v4-32
    python launch/tpu_vm.py setup  --name=hd --zone=us-central2-b [--repo-url=URL --ref=main]
    python launch/tpu_vm.py run    --name=hd --zone=us-central2-b --config=configs/pifuhd.py \
        --workdir=gs://bucket/runs/hd -- --config.train.num_steps=200000
    python launch/tpu_vm.py logs   --name=hd --zone=us-central2-b [--worker=all] [--follow]
    python launch/tpu_vm.py stop   --name=hd --zone=us-central2-b
    python launch/tpu_vm.py delete --name=hd --zone=us-central2-b

Everything after `--` goes to `hdjax.main` unchanged. `--dry-run` prints every command (one per
line, shell-quoted) instead of running it. On a TPU VM `jax.distributed.initialize()` needs no
arguments or environment: it reads the worker id and the workers' addresses from the TPU
metadata server, so `run` only starts the same command on every worker.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from launch_args import LaunchError, Parser, parse

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Relative to the login directory: `~` would not expand once shlex-quoted.
DEFAULT_REMOTE_DIR = "hdjax"
LOG_DIR = "logs"

_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ACCELERATOR = re.compile(r"^v\d+[a-z]*-\d+$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_JOB = re.compile(r"^[A-Za-z0-9_.-]+$")


def _gcloud(verb: Sequence[str], args: argparse.Namespace) -> list[str]:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", *verb, f"--zone={args.zone}"]
    if args.project:
        cmd.append(f"--project={args.project}")
    return cmd


def _ssh(args: argparse.Namespace, remote: str, worker: str = "all") -> list[str]:
    return [*_gcloud(["ssh", args.name], args), f"--worker={worker}", f"--command={remote}"]


def create_commands(args: argparse.Namespace) -> list[list[str]]:
    cmd = [
        *_gcloud(["create", args.name], args),
        f"--accelerator-type={args.accelerator_type}",
        f"--version={args.version}",
    ]
    if args.spot:
        cmd.append("--spot")
    return [cmd]


def setup_commands(args: argparse.Namespace) -> list[list[str]]:
    """Copy (git archive of HEAD) or clone the repo on every worker, then install it."""
    rdir = shlex.quote(args.remote_dir)
    commands: list[list[str]] = []
    if args.repo_url:
        fetch = (
            f"if [ -d {rdir}/.git ]; then git -C {rdir} fetch --quiet origin; "
            f"else git clone --quiet {shlex.quote(args.repo_url)} {rdir}; fi && "
            f"git -C {rdir} checkout --quiet {shlex.quote(args.ref)}"
        )
    else:
        # Only committed files travel: no virtualenvs, caches or half-edited work.
        tarball = os.path.join(tempfile.gettempdir(), f"hdjax-{args.name}.tar.gz")
        remote_tar = "hdjax-src.tar.gz"
        commands.append(
            ["git", "-C", REPO_ROOT, "archive", "--format=tar.gz", f"--output={tarball}", "HEAD"]
        )
        commands.append(
            [*_gcloud(["scp", tarball, f"{args.name}:{remote_tar}"], args), "--worker=all"]
        )
        fetch = f"mkdir -p {rdir} && tar -xzf {remote_tar} -C {rdir} && rm {remote_tar}"
    py = shlex.quote(args.python)
    steps = [fetch]
    if args.apt_python:
        # TPU VM images ship Ubuntu 22.04 (Python 3.10); hdjax needs >= 3.11.
        steps.append(
            "sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install "
            f"-y -qq {py} {py}-venv"
        )
    steps += [
        f"cd {rdir}",
        f"{py} -m venv .venv",
        ".venv/bin/pip install --quiet --upgrade pip",
        f".venv/bin/pip install --quiet -e '.[data]' {shlex.quote(args.jax_spec)}",
        # Only the version: touching devices here would start a pod-wide runtime.
        ".venv/bin/python -c 'import jax, libtpu; print(\"jax\", jax.__version__)'",
    ]
    commands.append(_ssh(args, " && ".join(steps)))
    return commands


def train_argv(args: argparse.Namespace) -> list[str]:
    """The hdjax.main command line; `gs://` paths and overrides pass through unchanged."""
    argv = [".venv/bin/python", "-m", "hdjax.main", f"--config={args.config}"]
    argv.append(f"--workdir={args.workdir}")
    if args.mode:
        argv.append(f"--mode={args.mode}")
    return argv + list(args.passthrough)


def run_commands(args: argparse.Namespace) -> list[list[str]]:
    """Start training on all workers under nohup: a dropped ssh session does not stop it.

    Each worker writes `<remote_dir>/logs/<job>.log` on its own disk and `<job>.pid` beside it;
    a job whose pid is still alive is not started twice.
    """
    rdir = shlex.quote(args.remote_dir)
    log = shlex.quote(f"{LOG_DIR}/{args.job}.log")
    pid = shlex.quote(f"{LOG_DIR}/{args.job}.pid")
    env = ["env", *args.env] if args.env else []
    train = shlex.join([*env, *train_argv(args)])
    remote = (
        f"cd {rdir} && mkdir -p {LOG_DIR} && "
        f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then '
        f'echo "{args.job} is already running on $(hostname)" >&2; exit 1; fi && '
        f"{{ nohup {train} > {log} 2>&1 < /dev/null & echo $! > {pid}; }} && "
        f'echo "started {args.job} on $(hostname): pid $(cat {pid}), log $(pwd)/"{log}'
    )
    return [_ssh(args, remote)]


def logs_commands(args: argparse.Namespace) -> list[list[str]]:
    log = shlex.quote(f"{args.remote_dir}/{LOG_DIR}/{args.job}.log")
    tail = f"tail -n {args.lines} -F {log}" if args.follow else f"tail -n {args.lines} {log}"
    return [_ssh(args, tail, worker=args.worker)]


def stop_commands(args: argparse.Namespace) -> list[list[str]]:
    """SIGTERM the job on all workers: hdjax saves a checkpoint before it exits."""
    pid = shlex.quote(f"{args.remote_dir}/{LOG_DIR}/{args.job}.pid")
    remote = f'if [ -f {pid} ]; then kill -TERM "$(cat {pid})" 2>/dev/null || true; fi'
    return [_ssh(args, remote)]


def delete_commands(args: argparse.Namespace) -> list[list[str]]:
    return [[*_gcloud(["delete", args.name], args), "--quiet"]]


COMMANDS = {
    "create": create_commands,
    "setup": setup_commands,
    "run": run_commands,
    "logs": logs_commands,
    "stop": stop_commands,
    "delete": delete_commands,
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tpu_vm.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument("--name", required=True, help="TPU VM name")
    common.add_argument("--zone", required=True, help="e.g. us-central2-b")
    common.add_argument("--project", default="", help="GCP project (default: gcloud's)")
    common.add_argument("--dry-run", action="store_true", help="print the commands only")
    common.add_argument(
        "--remote-dir", default=DEFAULT_REMOTE_DIR, help="checkout on the workers, relative to ~"
    )
    jobbed = Parser(add_help=False)
    jobbed.add_argument("--job", default="train", help="names the log and pid files")

    p = sub.add_parser("create", parents=[common], help="create the TPU VM / pod slice")
    p.add_argument("--accelerator-type", required=True, help="e.g. v4-8, v4-32, v5litepod-16")
    p.add_argument(
        "--version",
        default="tpu-ubuntu2204-base",
        help="TPU runtime (v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)",
    )
    p.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")

    p = sub.add_parser("setup", parents=[common], help="copy/clone and install on all workers")
    p.add_argument("--repo-url", default="", help="git clone this instead of copying HEAD")
    p.add_argument("--ref", default="main", help="branch, tag or commit with --repo-url")
    p.add_argument("--python", default="python3.11", help="interpreter for the venv")
    p.add_argument(
        "--no-apt-python",
        dest="apt_python",
        action="store_false",
        help="do not apt-get install the interpreter",
    )
    p.add_argument("--jax-spec", default="jax[tpu]", help="pip requirement for TPU jax")

    p = sub.add_parser("run", parents=[common, jobbed], help="start training on all workers")
    p.add_argument("--config", required=True, help="e.g. configs/pifuhd.py or ...:tiny")
    p.add_argument("--workdir", required=True, help="gs://bucket/dir (shared by all workers)")
    p.add_argument("--mode", default="", help="hdjax.main --mode (default: its own, train)")
    p.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="set on every worker"
    )

    p = sub.add_parser("logs", parents=[common, jobbed], help="show a worker's log")
    p.add_argument("--worker", default="0", help="worker index or 'all'")
    p.add_argument("--lines", type=int, default=100)
    p.add_argument("--follow", action="store_true", help="tail -F")

    sub.add_parser("stop", parents=[common, jobbed], help="SIGTERM the job (it checkpoints)")
    sub.add_parser("delete", parents=[common], help="delete the TPU VM")
    return parser


def validate(args: argparse.Namespace) -> None:
    if not _NAME.match(args.name):
        raise LaunchError(
            f"--name={args.name!r}: use lowercase letters, digits and hyphens, "
            "starting with a letter (at most 63)"
        )
    if getattr(args, "accelerator_type", None) is not None and not _ACCELERATOR.match(
        args.accelerator_type
    ):
        raise LaunchError(
            f"--accelerator-type={args.accelerator_type!r}: expected e.g. v4-32 or v5litepod-16"
        )
    if os.path.isabs(args.remote_dir) or ".." in args.remote_dir.split("/"):
        raise LaunchError(f"--remote-dir={args.remote_dir!r}: give a path inside the home dir")
    if getattr(args, "job", None) is not None and not _JOB.match(args.job):
        raise LaunchError(f"--job={args.job!r}: use letters, digits, '.', '_' or '-'")
    for item in getattr(args, "env", []):
        if not _ENV.match(item):
            raise LaunchError(f"--env={item!r}: expected KEY=VALUE")
    if getattr(args, "worker", None) is not None and not (
        args.worker == "all" or args.worker.isdigit()
    ):
        raise LaunchError(f"--worker={args.worker!r}: expected a worker index or 'all'")
    if getattr(args, "lines", 1) < 1:
        raise LaunchError(f"--lines={args.lines}: must be positive")
    if args.command == "run":
        for flag, value in (("--config", args.config), ("--workdir", args.workdir)):
            if not value.strip():
                raise LaunchError(f"{flag} is empty")
        if not args.workdir.startswith("gs://"):
            # Not an error: a single-host slice (v4-8) may checkpoint to its own disk.
            print(
                f"tpu_vm.py: warning: --workdir={args.workdir} is not a gs:// path; "
                "every worker of a pod slice needs the same checkpoint directory",
                file=sys.stderr,
            )
    elif args.passthrough:
        raise LaunchError(f"arguments after '--' are only for 'run': {args.passthrough}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse("tpu_vm.py", argv, build_parser, validate)
    if args is None:
        return 2
    for cmd in COMMANDS[args.command](args):
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        try:
            rc = subprocess.run(cmd, check=False).returncode
        except FileNotFoundError:
            print(f"tpu_vm.py: error: {cmd[0]} not found on PATH", file=sys.stderr)
            return 127
        if rc != 0:
            print(f"tpu_vm.py: error: command failed with exit status {rc}", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
