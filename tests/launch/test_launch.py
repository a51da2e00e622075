"""launch/tpu_vm.py and launch/slurm.py: dry-run output, bad arguments, and the generated shell
run locally with stand-ins for gcloud's remote side, scontrol and srun."""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPU = os.path.join(ROOT, "launch", "tpu_vm.py")
SLURM = os.path.join(ROOT, "launch", "slurm.py")
OVERRIDES = ["--config.train.num_steps=7", "--config.data.name=my data", "--config.x='q'"]
TPU_BASE = ["--name=hd-1", "--zone=us-central2-b", "--dry-run"]


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, timeout=30, env=env
    )


def _lines(script: str, *args: str) -> list[list[str]]:
    proc = _run(script, *args)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def _flag(cmd: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, cmd)
    return values[0]


def _shell_words(text: str) -> list[str]:
    """A remote shell command's words, with `;`, `&&`, `>` and `&` as words of their own."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def _contains(words: list[str], part: list[str]) -> bool:
    return any(words[i : i + len(part)] == part for i in range(len(words)))


def _executable(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def test_tpu_create_and_delete():
    (create,) = _lines(TPU, "create", *TPU_BASE, "--accelerator-type=v4-32", "--spot")
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "hd-1"]
    assert _flag(create, "zone") == "us-central2-b"
    assert _flag(create, "accelerator-type") == "v4-32"
    assert _flag(create, "version") == "tpu-ubuntu2204-base"
    assert "--spot" in create
    (delete,) = _lines(TPU, "delete", *TPU_BASE, "--project=my-proj")
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "hd-1"]
    assert _flag(delete, "project") == "my-proj" and "--quiet" in delete


def test_tpu_setup_copies_head_to_all_workers_and_installs():
    archive, scp, ssh = _lines(TPU, "setup", *TPU_BASE)
    assert archive[:4] == ["git", "-C", ROOT, "archive"] and archive[-1] == "HEAD"
    tarball = _flag(archive, "output")
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert scp[5] == tarball and scp[6].startswith("hd-1:")
    assert "--worker=all" in scp and "--worker=all" in ssh
    assert ssh[4:6] == ["ssh", "hd-1"]
    remote = _shell_words(_flag(ssh, "command"))
    assert _contains(remote, ["tar", "-xzf", scp[6].split(":", 1)[1], "-C", "hdjax"])
    assert _contains(remote, ["python3.11", "-m", "venv", ".venv"])
    assert _contains(remote, [".venv/bin/pip", "install", "--quiet", "-e", ".[data]", "jax[tpu]"])


def test_tpu_setup_git_clone():
    (ssh,) = _lines(TPU, "setup", *TPU_BASE, "--repo-url=https://example.com/h d.git", "--ref=v2")
    assert "--worker=all" in ssh
    remote = _shell_words(_flag(ssh, "command"))
    assert _contains(remote, ["clone", "--quiet", "https://example.com/h d.git", "hdjax", ";"])
    assert _contains(remote, ["checkout", "--quiet", "v2", "&&"])


def test_tpu_run_passes_overrides_and_gs_paths_through():
    (ssh,) = _lines(
        TPU,
        "run",
        *TPU_BASE,
        "--config=configs/pifuhd.py:tiny",
        "--workdir=gs://bucket/runs/a b",
        "--env=TFDS_DATA_DIR=gs://bucket/tfds",
        "--",
        *OVERRIDES,
    )
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "hd-1"]
    assert "--worker=all" in ssh
    remote = _shell_words(_flag(ssh, "command"))
    start = remote.index("nohup")
    end = remote.index(">", start)
    assert remote[start + 1 : end] == [
        "env",
        "TFDS_DATA_DIR=gs://bucket/tfds",
        ".venv/bin/python",
        "-m",
        "hdjax.main",
        "--config=configs/pifuhd.py:tiny",
        "--workdir=gs://bucket/runs/a b",
        *OVERRIDES,
    ]
    assert remote[end + 1] == "logs/train.log"


def _wait_for_lines(path, count: int) -> list[str]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if path.exists() and len(lines := path.read_text().splitlines()) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"{path}: fewer than {count} lines")


def test_tpu_run_remote_command_starts_detached_job(tmp_path):
    """The remote shell text, run by bash in a fake home: it returns at once, the job survives
    SIGHUP (a dropped ssh session) and receives its argv intact; pid and log per job."""
    (ssh,) = _lines(
        TPU, "run", *TPU_BASE, "--config=c.py", "--workdir=gs://b/w", "--job=j1", "--", *OVERRIDES
    )
    venv = tmp_path / "hdjax" / ".venv" / "bin"
    venv.mkdir(parents=True)
    _executable(
        str(venv / "python"),
        f"""\
        #!{sys.executable} -S
        import sys, time
        print("\\n".join(sys.argv[1:]), flush=True)
        time.sleep(0.5)
        print("done")
        """,
    )
    proc = subprocess.run(
        ["bash", "-c", _flag(ssh, "command")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert "started j1" in proc.stdout
    logs = tmp_path / "hdjax" / "logs"
    pid = int((logs / "j1.pid").read_text())
    expected = ["-m", "hdjax.main", "--config=c.py", "--workdir=gs://b/w", *OVERRIDES]
    assert _wait_for_lines(logs / "j1.log", len(expected)) == expected
    os.kill(pid, signal.SIGHUP)
    assert _wait_for_lines(logs / "j1.log", len(expected) + 1)[-1] == "done"


def test_tpu_logs_and_stop():
    (logs,) = _lines(TPU, "logs", *TPU_BASE, "--worker=3", "--lines=20")
    assert _flag(logs, "worker") == "3"
    assert shlex.split(_flag(logs, "command")) == ["tail", "-n", "20", "hdjax/logs/train.log"]
    (stop,) = _lines(TPU, "stop", *TPU_BASE)
    assert _flag(stop, "worker") == "all" and "kill -TERM" in _flag(stop, "command")


@pytest.mark.parametrize(
    "args, message",
    [
        (["create", *TPU_BASE[:2], "--accelerator-type=v4-32", "--name=Bad_Name"], "--name"),
        (["create", *TPU_BASE, "--accelerator-type=tpu32"], "--accelerator-type"),
        (["create", "--zone=z", "--accelerator-type=v4-8"], "--name"),
        (["run", *TPU_BASE, "--workdir=gs://b"], "--config"),
        (["run", *TPU_BASE, "--config=c", "--workdir=gs://b", "--env=NOEQUALS"], "--env"),
        (["delete", *TPU_BASE, "--", "--config.x=1"], "only for 'run'"),
        (["explode", *TPU_BASE], "invalid choice"),
    ],
)
def test_tpu_bad_arguments_one_line(args, message):
    proc = _run(TPU, *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("tpu_vm.py: error:") and message in proc.stderr


def _slurm_script(*args: str) -> str:
    proc = _run(SLURM, "--config=configs/pifuhd.py", "--workdir=gs://bucket/run", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _sbatch_lines(script: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_slurm_dry_run_script():
    script = _slurm_script(
        "--nodes=3",
        "--gpus-per-node=4",
        "--time=1-12:00:00",
        "--partition=gpu",
        "--account=proj",
        "--requeue",
        "--dry-run",
        "--",
        *OVERRIDES,
    )
    assert script.startswith("#!/bin/bash\n")
    sbatch = _sbatch_lines(script)
    for line in [
        "--nodes=3",
        "--ntasks-per-node=4",
        "--gres=gpu:4",
        "--time=1-12:00:00",
        "--partition=gpu",
        "--account=proj",
        "--requeue",
        "--signal=TERM@300",
    ]:
        assert line in sbatch
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in script
    assert "JAX_LOCAL_DEVICE_IDS" not in script
    (srun,) = [shlex.split(ln) for ln in script.splitlines() if ln.startswith("srun ")]
    i = srun.index("hdjax.main")
    assert srun[i - 3 : i + 3] == [
        "python",
        "-u",
        "-m",
        "hdjax.main",
        "--config=configs/pifuhd.py",
        "--workdir=gs://bucket/run",
    ]
    assert srun[i + 3 :] == OVERRIDES
    assert "--ntasks-per-node=4" in srun
    assert script.splitlines()[-1].startswith("# sbatch ")


def test_slurm_optional_lines_absent():
    sbatch = _sbatch_lines(_slurm_script("--dry-run", "--signal-grace=0"))
    assert not any(
        s.startswith(("--partition", "--account", "--signal", "--requeue")) for s in sbatch
    )


def _fake_cluster(tmp_path, script: str, job_id: int) -> dict[str, str]:
    """Run the sbatch script with bash; scontrol and srun are stand-ins that record for srun
    the environment JAX would see."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(str(bin_dir / "scontrol"), "#!/bin/sh\nprintf 'gpu-a7\\ngpu-b2\\n'\n")
    _executable(
        str(bin_dir / "srun"),
        f"""\
        #!/bin/sh
        env | grep '^JAX_' > {tmp_path}/env.txt
        """,
    )
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NODELIST": "gpu-a7,gpu-b2",
    }
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    proc = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines())


def test_slurm_coordinator_per_gpu(tmp_path):
    env = _fake_cluster(tmp_path, _slurm_script("--nodes=2", "--dry-run"), job_id=5000)
    # Default port from the job id, so two jobs sharing a head node do not collide.
    assert env == {"JAX_COORDINATOR_ADDRESS": f"gpu-a7:{61440 + 5000 % 4096}"}


def test_slurm_coordinator_per_node(tmp_path):
    script = _slurm_script(
        "--nodes=2", "--gpus-per-node=3", "--per=node", "--port=23456", "--dry-run"
    )
    assert "--ntasks-per-node=1" in _sbatch_lines(script)
    env = _fake_cluster(tmp_path, script, job_id=17)
    assert env == {"JAX_COORDINATOR_ADDRESS": "gpu-a7:23456", "JAX_LOCAL_DEVICE_IDS": "0,1,2"}


def test_jax_reads_process_ids_from_slurm():
    """The part left to JAX: its SLURM detection turns srun's per-task variables into the
    process count, id and local GPU, and keeps our coordinator address."""
    code = textwrap.dedent(
        """\
        from jax._src import clusters
        print(clusters.ClusterEnv.auto_detect_unset_distributed_params(
            "gpu-a7:23456", None, None, None, None, 10))
        """
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SLURM_JOB_ID": "17",
        "SLURM_STEP_NODELIST": "gpu-a7,gpu-b2",
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "('gpu-a7:23456', 8, 5, [1])"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nodes=0"], "--nodes"),
        (["--gpus-per-node=-1"], "--gpus-per-node"),
        (["--time=tomorrow"], "--time"),
        (["--port=80"], "--port"),
        (["--per=core"], "--per"),
        (["--nodes=two"], "--nodes"),
        (["--env=1X=2"], "--env"),
        (["--sbatch-arg=qos"], "--sbatch-arg"),
    ],
)
def test_slurm_bad_arguments_one_line(args, message):
    proc = _run(SLURM, "--config=c", "--workdir=w", "--dry-run", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("slurm.py: error:") and message in proc.stderr


def test_slurm_missing_config():
    proc = _run(SLURM, "--workdir=w", "--dry-run")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "--config" in proc.stderr


def test_slurm_writes_and_submits(tmp_path):
    """Without --dry-run: the script file is written and handed to sbatch."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(str(bin_dir / "sbatch"), f'#!/bin/sh\necho "$@" > {tmp_path}/sbatch_args\n')
    script_path = tmp_path / "out" / "job.sbatch"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    proc = _run(
        SLURM,
        "--config=c",
        "--workdir=w",
        f"--repo-dir={tmp_path}",
        f"--script={script_path}",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sbatch_args").read_text().split() == [str(script_path)]
    assert "srun " in script_path.read_text()
    assert (tmp_path / "slurm_logs").is_dir()  # sbatch needs the --output directory to exist
