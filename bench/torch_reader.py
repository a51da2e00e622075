"""Load time and peak RSS of `load_torch_file` vs `torch.load` on a large checkpoint.

Writes a checkpoint of a few big random float32 tensors (~1 GiB by default, legacy container
like the official `pifuhd.pt`) into a temporary directory, then measures each loader in its own
subprocess so the peaks are separate, and prints a table. The file is deleted afterwards.

    python -m bench.torch_reader [--gib 1.0] [--container legacy|zip|both]

Without torch the file is written by a small built-in legacy/zip writer and the torch rows are
skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from bench.common import REPO, worker_command

N_TENSORS = 4

# Each child prints one JSON line: seconds for the load, RSS peak after imports and at the end.
_CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})


def hwm_kib():
    # VmHWM resets at exec (unlike ru_maxrss, which keeps the parent's peak).
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


mode, path = sys.argv[1], sys.argv[2]
if mode.startswith("torch"):
    import torch
else:
    import numpy as np
    from hdjax.io.torch_pickle import load_torch_file
base = hwm_kib()
t0 = time.perf_counter()
if mode == "torch":
    sd = torch.load(path, weights_only=False)
elif mode == "torch_mmap":
    sd = torch.load(path, weights_only=False, mmap=True)
else:
    sd = load_torch_file(path)
t1 = time.perf_counter()
first = sd[sorted(sd)[0]]
if mode == "hdjax_touch":
    total = float(first.sum(dtype=np.float64))
elif mode.startswith("torch"):
    total = float(first.sum(dtype=torch.float64))
else:
    total = float(first[0, 0])
t2 = time.perf_counter()
peak = hwm_kib()
print(json.dumps(dict(load=t1 - t0, touch=t2 - t1, base_kib=base, peak_kib=peak, check=total)))
"""


def _write_without_torch(path: str, tensors: dict[str, np.ndarray], legacy: bool) -> None:
    """Minimal torch.save-compatible writer (protocol-2 pickle of `_rebuild_tensor_v2` calls)."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def i(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    body = b"\x80\x02}("  # PROTO 2, EMPTY_DICT, MARK
    for key, arr in tensors.items():
        pid = s("storage") + b"ctorch\nFloatStorage\n" + s(key) + s("cpu") + i(arr.size)
        pid += b"N" if legacy else b""  # legacy records carry a view-metadata slot
        shape = b"(" + b"".join(map(i, arr.shape)) + b"t"
        stride = b"(" + b"".join(i(st // arr.itemsize) for st in arr.strides) + b"t"
        args = b"((" + pid + b"tQ" + i(0) + shape + stride + b"\x89}t"  # ..., False, {})
        body += s(key) + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
    body += b"u."  # SETITEMS, STOP
    if legacy:
        info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}
        with open(path, "wb") as f:
            for obj in (0x1950A86A20F9469CFC6C, 1001, info):
                f.write(pickle.dumps(obj, protocol=2))
            f.write(body)
            f.write(pickle.dumps(list(tensors), protocol=2))
            for arr in tensors.values():
                f.write(struct.pack("<q", arr.size))
                arr.tofile(f)
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr("archive/data.pkl", body)
            zf.writestr("archive/version", "3\n")
            for key, arr in tensors.items():
                with zf.open(f"archive/data/{key}", "w", force_zip64=True) as member:
                    member.write(arr.tobytes())


def _write(path: str, gib: float, legacy: bool, have_torch: bool) -> None:
    rows = int(gib * 2**30 / 4 / N_TENSORS / 1024)
    rng = np.random.default_rng(0)
    tensors = {
        f"t{k}": rng.standard_normal((rows, 1024), dtype=np.float32) for k in range(N_TENSORS)
    }
    if have_torch:
        import torch

        torch.save(
            {k: torch.from_numpy(v) for k, v in tensors.items()},
            path,
            _use_new_zipfile_serialization=not legacy,
        )
    else:
        _write_without_torch(path, tensors, legacy)


def _run(mode: str, path: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(repo=REPO), mode, path],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB")
    parser.add_argument("--container", choices=["legacy", "zip", "both"], default="legacy")
    parser.add_argument("--write", help=argparse.SUPPRESS)  # internal: write file and exit
    parser.add_argument("--legacy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    if args.write:
        _write(args.write, args.gib, args.legacy, have_torch)
        return

    containers = ["legacy", "zip"] if args.container == "both" else [args.container]
    header = (
        f"{'container':9} {'loader':32} {'load s':>7} {'touch s':>8} "
        f"{'RSS after import MiB':>21} {'peak RSS MiB':>13} {'peak - import':>14}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for container in containers:
            path = os.path.join(tmp, f"bench_{container}.pt")
            # Written by a child process so this one stays small (children inherit nothing).
            subprocess.run(
                [*worker_command(__spec__.name), "--write", path, "--gib", str(args.gib)]
                + (["--legacy"] if container == "legacy" else []),
                check=True,
                cwd=REPO,
            )
            size_mib = os.path.getsize(path) / 2**20
            modes = [
                ("hdjax", "load_torch_file"),
                ("hdjax_touch", "load_torch_file + sum 1 tensor"),
            ]
            if have_torch:
                modes.append(("torch", "torch.load"))
                if container == "zip":
                    modes.append(("torch_mmap", "torch.load(mmap=True)"))
            for mode, label in modes:
                r = _run(mode, path)
                base, peak = r["base_kib"] / 1024, r["peak_kib"] / 1024
                print(
                    f"{container:9} {label:32} {r['load']:7.2f} {r['touch']:8.2f} "
                    f"{base:21.0f} {peak:13.0f} {peak - base:14.0f}"
                )
            os.remove(path)
            print(f"# {container}: {size_mib:.0f} MiB file, {N_TENSORS} float32 tensors")


if __name__ == "__main__":
    main()
