"""Tests for the torch-free checkpoint reader `hdjax.io.torch_pickle`.

Files are either written by real `torch.save` (parity tests, skipped without torch) or
assembled here opcode by opcode (runs everywhere: happy path, refused content, malicious
pickles).
"""

from __future__ import annotations

import argparse
import collections
import mmap
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from hdjax.errors import HdjaxError
from hdjax.io.torch_pickle import load_torch_file, release_pages

# ------------------------------------------------------------------------------------------
# A tiny pickle assembler, so container/security tests need no torch.

_MAGIC = 0x1950A86A20F9469CFC6C


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor(
    key: str,
    numel: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    offset: int = 0,
    storage: str = "FloatStorage",
    legacy: bool = False,
) -> bytes:
    pid_items = [_str("storage"), _global("torch", storage), _str(key), _str("cpu"), _int(numel)]
    if legacy:
        pid_items.append(b"N")
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + _tuple(
            _tuple(*pid_items) + b"Q",
            _int(offset),
            _tuple(*map(_int, size)),
            _tuple(*map(_int, stride)),
            b"\x89",  # requires_grad False
            b"}",  # backward hooks
        )
        + b"R"
    )


def _dict(pairs: list[tuple[str, bytes]]) -> bytes:
    return b"}(" + b"".join(_str(k) + v for k, v in pairs) + b"u"


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _write_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes], order: str = "little"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", order)
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", "3\n")


def _write_legacy(
    path: Path, main: bytes, storages: dict[str, tuple[int, bytes]], little: bool = True
) -> None:
    sys_info = {"protocol_version": 1001, "little_endian": little, "type_sizes": {}}
    count = "<q" if little else ">q"
    parts = [
        pickle.dumps(_MAGIC, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps(sys_info, protocol=2),
        main,
        pickle.dumps(list(storages), protocol=2),
    ]
    for numel, raw in storages.values():
        parts += [struct.pack(count, numel), raw]
    path.write_bytes(b"".join(parts))


_W = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5
_N = np.array([7, -3], dtype=np.int64)


def _simple_files(tmp_path: Path) -> dict[str, Path]:
    """One zip and one legacy file holding {'w': (3,4) f32, 'wt': w.T, 'row': w[1,1:3],
    'n': (2,) i64, 'name': 'x', 'epoch': 5}."""
    files = {}
    for legacy in (False, True):
        body = _dict(
            [
                ("w", _tensor("0", 12, (3, 4), (4, 1), legacy=legacy)),
                ("wt", _tensor("0", 12, (4, 3), (1, 4), legacy=legacy)),
                ("row", _tensor("0", 12, (2,), (1,), offset=5, legacy=legacy)),
                ("n", _tensor("1", 2, (2,), (1,), storage="LongStorage", legacy=legacy)),
                ("name", _str("x")),
                ("epoch", _int(5)),
            ]
        )
        path = tmp_path / ("legacy.bin" if legacy else "zip.bin")  # extension is irrelevant
        if legacy:
            _write_legacy(path, _pickle(body), {"0": (12, _W.tobytes()), "1": (2, _N.tobytes())})
        else:
            _write_zip(path, _pickle(body), {"0": _W.tobytes(), "1": _N.tobytes()})
        files["legacy" if legacy else "zip"] = path
    return files


def _is_mapped(arr: np.ndarray) -> bool:
    """True if the array's memory belongs to a memory map of the file."""
    base: Any = arr
    while base is not None:
        if isinstance(base, np.memmap | mmap.mmap):
            return True
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return False


# ------------------------------------------------------------------------------------------
# Torch-free: containers, views, laziness.


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_handmade_file_roundtrip(tmp_path, kind):
    out = load_torch_file(_simple_files(tmp_path)[kind])
    assert set(out) == {"w", "wt", "row", "n", "name", "epoch"}
    np.testing.assert_array_equal(out["w"], _W)
    np.testing.assert_array_equal(out["wt"], _W.T)
    np.testing.assert_array_equal(out["row"], _W[1, 1:3])
    np.testing.assert_array_equal(out["n"], _N)
    assert out["w"].dtype == np.float32 and out["n"].dtype == np.int64
    assert out["wt"].strides == (4, 16)  # the transpose stays a strided view
    assert np.shares_memory(out["w"], out["wt"]) and np.shares_memory(out["w"], out["row"])
    assert _is_mapped(out["w"])
    assert not out["w"].flags.writeable
    assert out["name"] == "x" and out["epoch"] == 5


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_big_endian_files_are_refused(tmp_path, kind):
    w_be = np.array([1.5, -2.0, 3.25], ">f4").tobytes()
    legacy = kind == "legacy"
    body = _pickle(_dict([("w", _tensor("0", 3, (3,), (1,), legacy=legacy))]))
    path = tmp_path / "be.pt"
    if legacy:
        _write_legacy(path, body, {"0": (3, w_be)}, little=False)
    else:
        _write_zip(path, body, {"0": w_be}, order="big")
    with pytest.raises(HdjaxError, match="unsupported big-endian checkpoint") as info:
        load_torch_file(path)
    assert info.value.path == str(path) and "\n" not in str(info.value)


def test_pre_1_0_storage_view_is_refused(tmp_path):
    # PyTorch < 1.0 legacy files could pickle a storage as a slice of another one.
    view = _tuple(_str("1"), _int(2), _int(4))
    pid = _tuple(_str("storage"), _global("torch", "FloatStorage"), _str("0"), _str("cpu"))
    pid = pid[:-1] + _int(12) + view + b"t"
    tensor = _global("torch._utils", "_rebuild_tensor_v2") + _tuple(
        pid + b"Q", _int(0), _tuple(_int(4)), _tuple(_int(1)), b"\x89", b"}"
    )
    path = tmp_path / "old.pt"
    _write_legacy(path, _pickle(_dict([("w", tensor + b"R")])), {"0": (12, _W.tobytes())})
    with pytest.raises(HdjaxError, match=r"unsupported storage view \(a PyTorch < 1\.0"):
        load_torch_file(path)


def test_tar_container_is_refused(tmp_path):
    # PyTorch < 0.4 wrote tar files; they are neither of the two containers read.
    member = tmp_path / "sys_info"
    member.write_bytes(b"x")
    path = tmp_path / "ancient.pt"
    with tarfile.open(path, "w") as tf:
        tf.add(member, arcname="sys_info")
    with pytest.raises(HdjaxError, match="neither a zip nor a legacy") as info:
        load_torch_file(path)
    assert info.value.path == str(path)


def test_compressed_zip_member_falls_back_to_reading(tmp_path):
    body = _pickle(_dict([("w", _tensor("0", 12, (3, 4), (4, 1)))]))
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("arch/data.pkl", body)
        zf.writestr("arch/data/0", _W.tobytes())
    out = load_torch_file(path)
    np.testing.assert_array_equal(out["w"], _W)
    assert not _is_mapped(out["w"])


def test_reader_never_imports_torch(tmp_path):
    files = _simple_files(tmp_path)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from hdjax.io.torch_pickle import load_torch_file\n"
        f"for p in {[str(p) for p in files.values()]!r}:\n"
        "    assert load_torch_file(p)['w'].shape == (3, 4)\n"
        "print('ok')\n"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_release_pages_keeps_data_readable(tmp_path):
    out = load_torch_file(_simple_files(tmp_path)["zip"])
    release_pages(out["wt"])
    release_pages(np.zeros(3))  # not mapped: nothing to do
    np.testing.assert_array_equal(out["wt"], _W.T)


# ------------------------------------------------------------------------------------------
# Torch-free: refusing malicious pickles before anything runs.


def _exploit_system(marker: Path) -> bytes:
    return _pickle(_global("os", "system") + _tuple(_str(f"touch {marker}")) + b"R")


def _exploit_exec(marker: Path) -> bytes:
    code = f"open({str(marker)!r}, 'w').close()"
    return _pickle(_global("builtins", "exec") + _tuple(_str(code)) + b"R")


def _exploit_stack_global(marker: Path) -> bytes:
    # Protocol 4: module and name pushed as strings, memoized and fetched back via BINGET.
    return (
        b"\x80\x04"
        + b"\x8c\x02os\x94"  # SHORT_BINUNICODE 'os', MEMOIZE -> memo 0
        + b"\x8c\x06system\x94"  # memo 1
        + b"0"  # POP: the strings are fetched from the memo instead
        + b"0"
        + b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        + _tuple(_str(f"touch {marker}"))
        + b"R."
    )


def _exploit_stack_global_dup(marker: Path) -> bytes:
    # DUP, POP between the name strings and STACK_GLOBAL: no literal pair for a scanner.
    return b"\x80\x04\x8c\x02os\x8c\x06system20\x93" + _tuple(_str(f"touch {marker}")) + b"R."


def _exploit_after_allowed(marker: Path) -> bytes:
    # Allowed objects are built first: refusal must not depend on where the global sits.
    ordered = _global("collections", "OrderedDict") + b")R"
    call = _global("os", "system") + _tuple(_str(f"touch {marker}")) + b"R"
    return _pickle(_dict([("a", ordered), ("b", call)]))


_EXPLOITS = {
    "os.system": _exploit_system,
    "builtins.exec": _exploit_exec,
    "stack_global": _exploit_stack_global,
    "stack_global_dup": _exploit_stack_global_dup,
    "after_allowed": _exploit_after_allowed,
}


@pytest.mark.parametrize("exploit", list(_EXPLOITS))
def test_exploits_are_live_with_plain_pickle(tmp_path, exploit):
    # Guards the refusal tests below: these payloads really run code under plain pickle.
    marker = tmp_path / "pwned"
    pickle.loads(_EXPLOITS[exploit](marker))
    assert marker.exists()


@pytest.mark.parametrize("container", ["zip", "legacy", "raw"])
@pytest.mark.parametrize("exploit", list(_EXPLOITS))
def test_malicious_pickle_is_refused_without_side_effect(tmp_path, container, exploit):
    marker = tmp_path / "pwned"
    payload = _EXPLOITS[exploit](marker)
    path = tmp_path / "evil.pt"
    if container == "zip":
        _write_zip(path, payload, {})
    elif container == "legacy":
        _write_legacy(path, payload, {})
    else:
        path.write_bytes(payload)
    with pytest.raises(HdjaxError) as info:
        load_torch_file(path)
    expected = "builtins.exec" if exploit == "builtins.exec" else "os.system"
    assert expected in str(info.value) and "refusing" in str(info.value)
    assert info.value.path == str(path)
    assert not marker.exists()


def _namespace_file(path: Path, build: bytes = b"") -> Path:
    """A zip whose pickle is {'opt': Namespace()}, with `build` run on the stub class first."""
    namespace = _global("argparse", "Namespace")
    _write_zip(path, _pickle(build + _dict([("opt", namespace + b")\x81")])), {})
    return path


@pytest.mark.parametrize(
    ("target", "state"),
    [
        (_global("argparse", "Namespace"), b"N" + _dict([("fields", _dict([("x", _int(1))]))])),
        (_global("torch", "FloatStorage"), _dict([("dtype", _global("torch", "int32"))])),
    ],
    ids=["namespace-class", "storage-type"],
)
def test_allowed_globals_cannot_be_modified(tmp_path, target, state):
    # BUILD on an allowed global would otherwise change what later files load to.
    slot_state = b"\x86" if state.startswith(b"N") else b""
    build = target + state + slot_state + b"b0"  # BUILD, POP
    with pytest.raises(HdjaxError, match=r"corrupt archive/data\.pkl"):
        load_torch_file(_namespace_file(tmp_path / "poison.pt", build))
    assert load_torch_file(_namespace_file(tmp_path / "clean.pt")) == {"opt": {}}
    out = load_torch_file(_simple_files(tmp_path)["zip"])
    assert out["w"].dtype == np.float32


def test_unknown_storage_type_is_refused(tmp_path):
    body = _pickle(_dict([("q", _tensor("0", 4, (4,), (1,), storage="QInt8Storage"))]))
    path = tmp_path / "q.pt"
    _write_zip(path, body, {"0": bytes(4)})
    with pytest.raises(HdjaxError, match=r"unsupported tensor type 'torch\.QInt8Storage'"):
        load_torch_file(path)


# ------------------------------------------------------------------------------------------
# Torch-free: broken files give one clear error.


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_truncated_files_raise(tmp_path, kind):
    full = _simple_files(tmp_path)[kind].read_bytes()
    cut_path = tmp_path / "cut.pt"
    for cut in (1, 3, 10, 40, len(full) // 3, len(full) // 2, len(full) - 60, len(full) - 1):
        cut_path.write_bytes(full[:cut])
        with pytest.raises(HdjaxError) as info:
            load_torch_file(cut_path)
        assert info.value.path == str(cut_path), cut


def test_truncated_legacy_storage_message(tmp_path):
    full = _simple_files(tmp_path)["legacy"].read_bytes()
    cut_path = tmp_path / "cut.pt"
    cut_path.write_bytes(full[:-4])  # lose half of storage "1" (2 x int64)
    with pytest.raises(HdjaxError, match=r"truncated: storage 1 needs 16 bytes at offset \d+"):
        load_torch_file(cut_path)


def test_missing_zip_member(tmp_path):
    path = tmp_path / "m.pt"
    _write_zip(path, _pickle(_dict([("w", _tensor("7", 12, (3, 4), (4, 1)))])), {})
    with pytest.raises(HdjaxError, match=r"missing zip member 'archive/data/7'"):
        load_torch_file(path)


def test_tensor_outside_its_storage(tmp_path):
    path = tmp_path / "oob.pt"
    _write_zip(path, _pickle(_dict([("w", _tensor("0", 4, (3, 4), (4, 1)))])), {"0": bytes(16)})
    with pytest.raises(HdjaxError, match="reads past storage 0"):
        load_torch_file(path)


@pytest.mark.parametrize("head", [b"", b"\x80", b"PK\x03\x04", b"junk"])
def test_random_bytes_raise(tmp_path, head):
    path = tmp_path / "random.pt"
    path.write_bytes(head + np.random.default_rng(0).bytes(4096))
    with pytest.raises(HdjaxError) as info:
        load_torch_file(path)
    assert info.value.path == str(path)


def test_plain_pickle_and_missing_file(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(HdjaxError, match="not a PyTorch checkpoint"):
        load_torch_file(path)
    with pytest.raises(HdjaxError, match="no such file"):
        load_torch_file(tmp_path / "absent.pt")


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(HdjaxError, match=r"data\.pkl"):
        load_torch_file(path)


# ------------------------------------------------------------------------------------------
# Parity with torch.load (skipped without torch).


def _torch_payload(torch: Any) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    dtypes = [
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    ]
    tensors = {
        str(dt).removeprefix("torch."): (torch.randn(3, 5, generator=gen) * 50).to(dt)
        for dt in dtypes
    }
    base = torch.randn(4, 6, generator=gen)
    views = {
        "base": base,
        "transpose": base.t(),
        "slice": base[1:3, ::2],
        "narrow": base.narrow(1, 2, 3),
        "scalar": base[2, 3],
        "expanded": torch.randn(1, 3, generator=gen).expand(4, 3),
        "empty": torch.zeros(0, 3),
    }
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net(torch.randn(2, 3, 6, 6, generator=gen)).square().mean().backward()
    opt.step()
    return {
        "epoch": 12,
        "model": "Model",
        "best_loss": torch.tensor(0.25),
        "lr": 1e-4,
        "names": ["a", "b", ("c", 3)],
        "none": None,
        "raw": b"\x00\x01",
        "tags": {1, 2},
        "np_scalar": np.float64(1.5),
        "np_array": np.arange(6, dtype=np.int16).reshape(2, 3),
        "tensors": tensors,
        "views": views,
        "param": torch.nn.Parameter(torch.ones(2, 2)),
        "nested": collections.OrderedDict(
            [("inner", collections.OrderedDict([("x", torch.arange(4))]))]
        ),
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "opt": argparse.Namespace(name="pifuhd_final", num_stack=4, mlp_dim=[257, 1024, 1]),
    }


def _assert_same(ours: Any, ref: Any, torch: Any, where: str = "") -> None:
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, np.ndarray), where
        ref = ref.detach()
        assert tuple(ours.shape) == tuple(ref.shape), where
        if ref.dtype == torch.bfloat16:
            assert ours.dtype == np.dtype(ml_dtypes.bfloat16), where
            ref_np = ref.view(torch.int16).numpy()
            ours = ours.view(np.int16)
        else:
            ref_np = ref.numpy()
            assert ours.dtype == ref_np.dtype, where
        if ref.numel():
            strides = tuple(s * ours.itemsize for s in ref.stride())
            assert ours.strides == strides, where
        np.testing.assert_array_equal(ours, ref_np, err_msg=where)
    elif isinstance(ref, argparse.Namespace):
        assert type(ours) is dict, where
        _assert_same(ours, vars(ref), torch, where)
    elif isinstance(ref, dict):
        assert type(ours) is type(ref) and list(ours) == list(ref), where
        for k in ref:
            _assert_same(ours[k], ref[k], torch, f"{where}.{k}")
    elif isinstance(ref, list | tuple):
        assert type(ours) is type(ref) and len(ours) == len(ref), where
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            _assert_same(a, b, torch, f"{where}[{i}]")
    elif isinstance(ref, np.ndarray):
        assert ours.dtype == ref.dtype, where
        np.testing.assert_array_equal(ours, ref, err_msg=where)
    else:
        assert type(ours) is type(ref) and ours == ref, where


@pytest.mark.parametrize(
    ("legacy", "protocol"),
    [(False, 2), (True, 2), (False, 4), (True, 4)],
    ids=["zip", "legacy", "zip-p4", "legacy-p4"],
)
def test_matches_torch_load(tmp_path, legacy, protocol):
    torch = pytest.importorskip("torch")
    path = tmp_path / "ckpt.pth.tar"
    torch.save(
        _torch_payload(torch),
        path,
        _use_new_zipfile_serialization=not legacy,
        pickle_protocol=protocol,
    )
    ref = torch.load(path, weights_only=False)
    ours = load_torch_file(path)
    _assert_same(ours, ref, torch)
    # Views of one storage share memory, as the tensors did.
    views = ours["views"]
    for name in ("transpose", "slice", "narrow", "scalar"):
        assert np.shares_memory(views["base"], views[name]), name
    assert _is_mapped(views["base"])
    # OrderedDict keeps torch's `_metadata` attribute (module versions).
    assert ours["model_state_dict"]._metadata == ref["model_state_dict"]._metadata
    assert ours["model_state_dict"]["1.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_unsigned_dtypes_match_torch_load(tmp_path, legacy):
    # Dtypes without a storage class: torch >= 2 pickles them with `_rebuild_tensor_v3`.
    torch = pytest.importorskip("torch")
    payload = {
        "u16": torch.tensor([0, 1, 65535], dtype=torch.int32).to(torch.uint16),
        "u32": torch.tensor([0, 7], dtype=torch.int64).to(torch.uint32),
    }
    path = tmp_path / "new.pt"
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    ours = load_torch_file(path)
    for key, ref in payload.items():
        assert ours[key].dtype == np.dtype(f"u{ref.element_size()}"), key
        np.testing.assert_array_equal(ours[key].astype(np.int64), ref.to(torch.int64).numpy())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize(
    ("dtype", "pickled"),
    [("complex64", "torch.ComplexFloatStorage"), ("float8_e4m3fn", "torch.float8_e4m3fn")],
)
def test_unsupported_dtypes_name_the_file(tmp_path, legacy, dtype, pickled):
    torch = pytest.importorskip("torch")
    path = tmp_path / "odd.pt"
    torch.save(
        {"x": torch.ones(3).to(getattr(torch, dtype))},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(HdjaxError) as info:
        load_torch_file(path)
    assert str(info.value) == (
        f"{path}: unsupported tensor type '{pickled}' (only real float, integer and bool "
        "tensors are read)"
    )


def test_2k2k_style_checkpoint_matches_torch(tmp_path):
    # 2K2K's ckpt_bg_mask.pth.tar layout: a DataParallel state dict ('module.' keys), the
    # optimiser state after a step (int and float tensors, Python numbers), an epoch.
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1)
    )
    wrapped = torch.nn.DataParallel(net)
    opt = torch.optim.Adam(wrapped.parameters(), lr=1e-3)
    wrapped(torch.randn(2, 3, 8, 8)).mean().backward()
    opt.step()
    path = tmp_path / "ckpt_bg_mask.pth.tar"
    torch.save(
        {
            "model_state_dict": wrapped.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
            "epoch": 3,
        },
        path,
    )
    ref = torch.load(path, weights_only=True)
    ours = load_torch_file(path)
    assert ours["epoch"] == 3
    state = ours["model_state_dict"]
    assert list(state) == list(ref["model_state_dict"])
    assert all(k.startswith("module.") for k in state)
    assert state["module.1.num_batches_tracked"].dtype == np.int64
    opt_state = ours["optimizer_state_dict"]
    assert opt_state["param_groups"][0]["lr"] == 1e-3
    assert opt_state["param_groups"][0]["params"] == list(range(6))
    _assert_same(ours, ref, torch)


def test_module_pickle_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(HdjaxError, match=r"torch\.nn\.modules\.linear\.Linear"):
        load_torch_file(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_torch_files_raise(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    path = tmp_path / "full.pt"
    torch.save(
        {"w": torch.randn(64, 64), "n": torch.tensor(3)},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    full = path.read_bytes()
    cut_path = tmp_path / "cut.pt"
    for frac in (0.01, 0.1, 0.3, 0.5, 0.9, 0.999):
        cut_path.write_bytes(full[: int(len(full) * frac)])
        with pytest.raises(HdjaxError):
            load_torch_file(cut_path)
