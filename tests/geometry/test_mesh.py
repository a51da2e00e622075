"""Marching cubes, normal colours and writers against the official `mesh_util`."""

from __future__ import annotations

import os

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from hdjax.geometry import mesh, octree


def occupancy(kind: str, pts: np.ndarray, width: float = 0.02) -> np.ndarray:
    """`(N, 3) float32` query-frame points -> `(N,) float32` occupancy, high inside.

    Uses only + − × ÷ √ (correctly rounded), so any two callers agree bit for bit.
    """
    p = pts.astype(np.float32)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if kind == "sphere":
        d = np.sqrt(x * x + y * y + z * z) - np.float32(0.5)
    elif kind == "two_spheres":
        a = np.sqrt((x - np.float32(0.3)) ** 2 + y * y + z * z) - np.float32(0.3)
        b = np.sqrt((x + np.float32(0.4)) ** 2 + (y - np.float32(0.2)) ** 2 + z * z)
        d = np.minimum(a, b - np.float32(0.25))
    elif kind == "box":
        q = np.abs(p) - np.array([0.5, 0.3, 0.2], np.float32)
        d = np.sqrt((np.maximum(q, 0) ** 2).sum(1)) + np.minimum(q.max(1), 0)
    elif kind == "capsules":
        # A crude standing figure: torso, legs and arms as capsules.
        segs = [  # (end a, end b, radius)
            ((0, 0.45, 0), (0, -0.05, 0), 0.16),
            ((0.08, -0.1, 0), (0.1, -0.85, 0.02), 0.07),
            ((-0.08, -0.1, 0), (-0.1, -0.85, -0.02), 0.07),
            ((0.2, 0.4, 0), (0.5, 0.05, 0.05), 0.045),
            ((-0.2, 0.4, 0), (-0.55, 0.1, 0.0), 0.045),
            ((0, 0.62, 0), (0, 0.72, 0), 0.1),
        ]
        d = np.full(len(p), np.inf, np.float32)
        for a, b, rad in segs:
            a, b = np.float32(a), np.float32(b)
            ab = b - a
            t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
            d = np.minimum(d, np.sqrt(((p - a - t[:, None] * ab) ** 2).sum(1)) - np.float32(rad))
    else:
        raise ValueError(kind)
    d = d.astype(np.float32)
    w = np.float32(width)
    return (np.float32(0.5) - np.float32(0.5) * d / np.sqrt(d * d + w * w)).astype(np.float32)


def grid_eval_fn(kind: str, r: int, width: float = 0.02):
    return lambda idx: occupancy(kind, octree.indices_to_points(idx, r), width)


def test_extract_mesh_matches_official_reconstruction_and_obj(tmp_path):
    torch = pytest.importorskip("torch")
    mesh_util = pytest.importorskip("PIFuHD.mesh_util")
    r = 64

    class FakeNet:
        def query(self, samples, calib):
            pts = samples[0].numpy().T  # (N, 3) float32 query frame
            self.pred = torch.from_numpy(occupancy("two_spheres", pts))[None, None]

        def get_preds(self):
            return self.pred

    calib = torch.from_numpy(np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32))[None]
    ref_v, ref_f, _, _ = mesh_util.reconstruction(
        FakeNet(), "cpu", calib, r, None, None, use_octree=True, num_samples=50000
    )
    grid, _ = octree.eval_grid(grid_eval_fn("two_spheres", r), r, method="octree")
    verts, faces = mesh.extract_mesh(grid, r)
    assert verts.dtype == np.float32 and faces.dtype == np.int32
    assert verts.shape == ref_v.shape
    np.testing.assert_allclose(verts, ref_v, rtol=0, atol=1e-6)
    # The official writer emits (f0, f2, f1) of its (reversed) faces; we return that order.
    np.testing.assert_array_equal(faces, ref_f[:, [0, 2, 1]])

    colors = np.random.default_rng(0).uniform(size=verts.shape).astype(np.float32)
    ref_path, our_path = tmp_path / "ref.obj", tmp_path / "ours.obj"
    mesh_util.save_obj_mesh_with_color(str(ref_path), ref_v, ref_f, colors.astype(np.float64))
    mesh.save_obj(our_path, verts, faces, colors)
    ref_lines = ref_path.read_text().splitlines()
    our_lines = our_path.read_text().splitlines()
    assert len(ref_lines) == len(our_lines)
    nv = len(verts)
    assert our_lines[nv:] == ref_lines[nv:]  # face lines identical
    assert all(line.startswith("v ") for line in our_lines[:nv])
    ref_num = np.array([line.split()[1:] for line in ref_lines[:nv]], np.float64)
    our_num = np.array([line.split()[1:] for line in our_lines[:nv]], np.float64)
    # float32 vs float64 vertices may round differently in the 4th decimal.
    np.testing.assert_allclose(our_num, ref_num, rtol=0, atol=1.00001e-4)
    assert (our_num == ref_num).mean() > 0.99


def test_extract_mesh_orientation_and_frame():
    r = 64
    grid, _ = octree.eval_grid(grid_eval_fn("sphere", r), r, method="octree", init_resolution=16)
    verts, faces = mesh.extract_mesh(grid, r)
    radius = np.linalg.norm(verts, axis=1)
    np.testing.assert_allclose(radius, 0.5, atol=0.01)
    tm = trimesh.Trimesh(verts, faces, process=False)
    assert tm.is_watertight
    # The official written winding in the y-flipped frame faces outward (positive volume).
    assert tm.volume == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.02)


def test_extract_mesh_without_surface_raises():
    with pytest.raises(ValueError, match="no surface"):
        mesh.extract_mesh(np.zeros((8, 8, 8), np.float32), 8)


@pytest.mark.parametrize("kind", ["sphere", "two_spheres", "box", "capsules"])
def test_narrowband_mesh_within_one_voxel_of_official_mode(kind):
    r, init = 128, 32
    fn = grid_eval_fn(kind, r, width=0.01)
    ref, st_ref = octree.eval_grid(fn, r, method="octree", init_resolution=init)
    nb, st = octree.eval_grid(fn, r, method="narrowband", init_resolution=init)
    assert st.queries < st_ref.queries
    v_ref, _ = mesh.extract_mesh(ref, r)
    v_nb, _ = mesh.extract_mesh(nb, r)
    voxel = 2.0 / r
    d1, _ = cKDTree(v_ref).query(v_nb)
    d2, _ = cKDTree(v_nb).query(v_ref)
    assert max(d1.max(), d2.max()) <= voxel


def test_vertex_normal_colors_forward_differences():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    verts = rng.normal(size=(50, 3)).astype(np.float32)
    verts = 0.5 * verts / np.linalg.norm(verts, axis=1, keepdims=True)
    calls = []

    def fn(pts):
        calls.append(pts)
        return occupancy("sphere", pts, width=0.05)

    colors = mesh.vertex_normal_colors(fn, verts)
    assert colors.dtype == np.float32 and colors.shape == (50, 3)
    (pts,) = calls
    assert pts.dtype == np.float32 and pts.shape == (200, 3)
    # Interleaved [p, p+dx, p+dy, p+dz] per vertex, as the official calc_normal.
    q = pts.reshape(50, 4, 3)
    np.testing.assert_array_equal(q[:, 0], verts)
    np.testing.assert_array_equal(q[:, 2], verts + np.float32(0.001) * np.float32([0, 1, 0]))
    # Reference: the official formula in torch.
    f = torch.from_numpy(occupancy("sphere", pts, width=0.05).reshape(50, 4))
    n = -(f[:, 1:] - f[:, :1])
    ref = torch.nn.functional.normalize(n, dim=1, eps=1e-8).numpy() * 0.5 + 0.5
    np.testing.assert_allclose(colors, ref, rtol=0, atol=1e-6)
    # Outward normals of a sphere whose occupancy falls outward; every vertex coloured.
    np.testing.assert_allclose(colors, verts / 0.5 * 0.5 + 0.5, atol=2e-3)


def test_obj_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    verts = rng.uniform(-1, 1, size=(20, 3)).astype(np.float32)
    faces = rng.integers(0, 20, size=(30, 3)).astype(np.int32)
    colors = rng.uniform(size=(20, 3)).astype(np.float32)
    path = tmp_path / "m.obj"
    mesh.save_obj(path, verts, faces, colors)
    lines = path.read_text().splitlines()
    assert lines[0] == "v " + " ".join(f"{c:.4f}" for c in (*verts[0], *colors[0]))
    assert lines[20] == "f " + " ".join(str(i + 1) for i in faces[0])
    tm = trimesh.load(path, process=False, maintain_order=True)
    np.testing.assert_allclose(tm.vertices, verts, atol=5.1e-5)
    np.testing.assert_array_equal(tm.faces, faces)
    mesh.save_obj(path, verts, faces)
    assert path.read_text().splitlines()[0] == "v " + " ".join(f"{c:.4f}" for c in verts[0])


def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    verts = rng.uniform(-1, 1, size=(20, 3)).astype(np.float32)
    faces = rng.integers(0, 20, size=(30, 3)).astype(np.int32)
    colors = rng.uniform(size=(20, 3)).astype(np.float32)
    path = tmp_path / "m.ply"
    mesh.save_ply(path, verts, faces, colors)
    tm = trimesh.load(path, process=False)
    np.testing.assert_array_equal(np.asarray(tm.vertices, np.float32), verts)
    np.testing.assert_array_equal(tm.faces, faces)
    rgb = tm.visual.vertex_colors[:, :3]
    np.testing.assert_array_equal(rgb, np.rint(colors * 255).astype(np.uint8))
    mesh.save_ply(path, verts, faces)
    assert len(trimesh.load(path, process=False).vertices) == 20


@pytest.mark.parametrize("writer", [mesh.save_obj, mesh.save_ply])
def test_failed_write_keeps_old_file(tmp_path, monkeypatch, writer):
    path = tmp_path / "out.mesh"
    path.write_bytes(b"old complete file")
    verts = np.zeros((3, 3), np.float32)
    faces = np.array([[0, 1, 2]], np.int32)

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        writer(path, verts, faces)
    assert path.read_bytes() == b"old complete file"
    assert os.listdir(tmp_path) == ["out.mesh"]  # no temp file left behind
    monkeypatch.undo()
    writer(path, verts, faces)
    assert path.read_bytes() != b"old complete file"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
