"""Headless CPU renderer for training data: embree ray casting, numpy shading, no OpenGL.

`render(mesh, camera, rng, joints=None)` takes a mesh already in the normalised frame (see
`hdjax.data.camera`: `pifu_normalization` / `twok2k_normalization`, then `normalize_mesh`) and
returns a dict of numpy arrays, all ``[row, col]`` indexed, H = W = ``camera.size``:

=================  =====================  ==================================================
key                shape / dtype          meaning
=================  =====================  ==================================================
``image``          (H, W, 3) uint8        shaded RGB (random lights), background 0
``albedo``         (H, W, 3) uint8        unshaded colour of the front surface, background 0
``mask``           (H, W) bool            a camera ray hits the mesh
``normal_front``   (H, W, 3) float32      unit outward normal at the nearest hit, view frame
``normal_back``    (H, W, 3) float32      unit outward normal at the farthest hit, view frame
``depth_front``    (H, W) float32         nearest hit; see below; background 0
``depth_back``     (H, W) float32         farthest hit; see below; background 0
``calib``          (4, 4) float32         ``camera.calib`` (normalised point -> uv or pixels)
``keypoints``      (J, 2) float32         only with ``joints``: projected (u, v) pixels
``keypoints_visible`` (J,) bool           only with ``joints``: inside the image
=================  =====================  ==================================================

Normals are in the view frame (x right, y up, z toward the camera), so front normals mostly
have z > 0 and back normals z < 0; smooth (barycentric vertex normals) by default.
Depths: `OrthoCamera` -> view-frame z (front > back; 0 is a valid depth, use ``mask``);
`PerspCamera` -> the 2K2K encoding ``d = (r − 1)·f + 1024`` of the ray distance r (front <
back; `camera.depth_to_png` gives the uint16 PNG values).

Front hits come from one ray per pixel of the mesh's projected bounding box (`footprint`);
back hits from the same rays cast in reverse from beyond the mesh (the first hit of the
reversed ray is the farthest hit of the forward ray), only for foreground pixels. Hit points
are rebuilt from float64 vertices and embree's barycentrics. Colours: texture (UV + image,
bilinear), else vertex or face colours, else a random flat albedo. Lighting: ambient + 1–2
random directional lights (Lambert + Blinn–Phong), colours and intensities drawn from ``rng``.
The keypoint ``visible`` flag only means "inside the image" (no occlusion test).
"""

from __future__ import annotations

import cv2
import numpy as np
import trimesh
from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh

from hdjax.data.camera import (
    Camera,
    OrthoCamera,
    camera_rays,
    encode_ray_depth,
    footprint,
    project,
)

_MISS = -1


def _scene(mesh: trimesh.Trimesh) -> rtcore_scene.EmbreeScene:
    scene = rtcore_scene.EmbreeScene()
    TriangleMesh(
        scene=scene,
        vertices=np.ascontiguousarray(mesh.vertices, np.float32),
        indices=np.ascontiguousarray(mesh.faces, np.int32),
    )
    return scene


def _cast(scene, origins, directions):
    res = scene.run(
        np.ascontiguousarray(origins, np.float32),
        np.ascontiguousarray(directions, np.float32),
        output=1,
    )
    face = res["primID"].astype(np.int64)
    u = res["u"].astype(np.float64)
    v = res["v"].astype(np.float64)
    bary = np.stack([1.0 - u - v, u, v], axis=1)
    return face, bary, res["tfar"].astype(np.float64)


def cast_rays(
    mesh: trimesh.Trimesh, origins: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First hit of each ray (embree, float32 internally).

    Args:
      mesh: the triangles.
      origins, directions: (N, 3) float; directions need not be unit.

    Returns:
      face index (N,) int64 (−1 = miss), barycentrics (N, 3) float64 of the hit with
      ``hit = Σ_k b_k · V[F[face, k]]``, and the ray parameter t (N,) float64.
    """
    return _cast(_scene(mesh), origins, directions)


def _interp(values: np.ndarray, faces: np.ndarray, face: np.ndarray, bary: np.ndarray):
    """Barycentric interpolation of per-vertex ``values`` (V, C) at hits -> (N, C) float64."""
    return np.einsum("nk,nkc->nc", bary, np.asarray(values, np.float64)[faces[face]])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _surface_normals(mesh, face, bary, smooth: bool) -> np.ndarray:
    if smooth:
        return _unit(_interp(mesh.vertex_normals, mesh.faces, face, bary))
    return np.asarray(mesh.face_normals, np.float64)[face]


def _texture_lookup(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of (h, w, C) ``image`` at (N, 2) UVs (origin bottom-left, repeat)."""
    h, w = image.shape[:2]
    uv = np.mod(uv, 1.0)
    x = (uv[:, 0] * w - 0.5).astype(np.float32)
    y = ((1.0 - uv[:, 1]) * h - 0.5).astype(np.float32)
    out = cv2.remap(
        image, x[:, None], y[:, None], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return out.reshape(len(uv), -1)


def _albedo(mesh: trimesh.Trimesh, face, bary, rng: np.random.Generator) -> np.ndarray:
    """(N, 3) float32 colours in [0, 1] of the hits."""
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None:
        material = visual.material
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is not None:
            tex = np.asarray(image.convert("RGB"), np.uint8)
            uv = _interp(visual.uv, mesh.faces, face, bary)
            return _texture_lookup(tex, uv)[:, :3].astype(np.float32) / np.float32(255.0)
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind == "vertex":
        rgb = np.asarray(visual.vertex_colors, np.float64)[:, :3] / 255.0
        return _interp(rgb, mesh.faces, face, bary).astype(np.float32)
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind == "face":
        return np.asarray(visual.face_colors, np.float32)[face, :3] / np.float32(255.0)
    flat = rng.uniform(0.3, 0.9, size=3).astype(np.float32)
    return np.broadcast_to(flat, (len(face), 3))


def shade(
    albedo: np.ndarray, normals: np.ndarray, view_dirs: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Random-light shading.

    Args:
      albedo: (N, 3) float in [0, 1]; normals: (N, 3) unit, view frame;
      view_dirs: (N, 3) unit, from the surface toward the camera.

    Returns:
      (N, 3) float32 in [0, 1].
    """
    # float32 throughout: this runs on millions of pixels and 8-bit output needs no more.
    albedo = np.asarray(albedo, np.float32)
    normals = np.asarray(normals, np.float32)
    view_dirs = np.asarray(view_dirs, np.float32)
    ambient = (rng.uniform(0.15, 0.45) * rng.uniform(0.85, 1.0, size=3)).astype(np.float32)
    light = np.broadcast_to(ambient, albedo.shape).copy()
    spec = np.zeros_like(albedo)
    shininess = rng.uniform(5.0, 40.0)
    for _ in range(rng.integers(1, 3)):
        # Lights in front of the subject (z > 0 of the view frame), like a studio capture.
        d = _unit(np.array([rng.uniform(-1, 1), rng.uniform(-0.5, 1.0), rng.uniform(0.3, 1.5)]))
        d = d.astype(np.float32)
        colour = (rng.uniform(0.8, 1.0, size=3) * rng.uniform(0.4, 0.9)).astype(np.float32)
        lambert = np.clip(normals @ d, 0.0, None)
        light += lambert[:, None] * colour
        half = _unit(view_dirs + d)
        blinn = np.clip(np.sum(normals * half, axis=1), 0.0, None) ** shininess
        strength = np.float32(rng.uniform(0.0, 0.25))
        spec += (strength * blinn * (lambert > 0))[:, None] * colour
    return np.clip(albedo * light + spec, 0.0, 1.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * np.float32(255.0)), 0, 255).astype(np.uint8)


def render(
    mesh: trimesh.Trimesh,
    camera: Camera,
    rng: np.random.Generator,
    joints: np.ndarray | None = None,
    smooth: bool = True,
) -> dict[str, np.ndarray]:
    """Render a normalised mesh with `camera` (keys and conventions: module docstring).

    Args:
      mesh: triangle mesh in the normalised frame, outward-facing winding.
      camera: `OrthoCamera` (PIFuHD) or `PerspCamera` (2K2K); its yaw turns the mesh.
      rng: source of the random lighting (and of the flat albedo of uncoloured meshes).
      joints: optional (J, 3) normalised-frame 3D joints to project.
      smooth: interpolate vertex normals (else flat face normals).
    """
    size = camera.size
    rot = camera.rotation
    verts = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces)
    if len(faces) == 0:
        raise ValueError("cannot render a mesh without faces")
    ortho = isinstance(camera, OrthoCamera)
    # Only pixels inside the projected bounding box of the vertices can be hit.
    window = footprint(verts, camera)
    r0, r1, c0, c1 = window
    origins, dirs = camera_rays(camera, window)
    win_idx = (np.arange(r0, r1)[:, None] * size + np.arange(c0, c1)[None, :]).reshape(-1)
    origins = origins.reshape(-1, 3)
    dirs = dirs.reshape(-1, 3)
    # The scene stays in the normalised frame; the rays go the other way through the yaw.
    radius = float(np.linalg.norm(verts, axis=1).max()) + 1.0
    if ortho:
        origins[:, 2] = radius
    o_world, d_world = origins @ rot, dirs @ rot
    scene = _scene(mesh)

    face_f, bary_f, _ = _cast(scene, o_world, d_world)
    hit = np.nonzero(face_f != _MISS)[0]
    face_f, bary_f = face_f[hit], bary_f[hit]
    pix = win_idx[hit]  # flat image index of every foreground pixel

    # Back: reverse the foreground rays from beyond the far side of the mesh; the first hit
    # of a reversed ray is the farthest hit of the forward ray.
    far = 2.0 * radius if ortho else camera.distance + radius
    face_b, bary_b, _ = _cast(scene, o_world[hit] + d_world[hit] * far, -d_world[hit])
    # A foreground ray always has a farthest hit; a miss here is float32 noise at a grazing
    # edge: fall back to the front hit.
    miss_b = face_b == _MISS
    face_b[miss_b], bary_b[miss_b] = face_f[miss_b], bary_f[miss_b]

    # Hit points from float64 vertices and embree's barycentrics: exact on the triangle.
    p_front = _interp(verts, faces, face_f, bary_f) @ rot.T  # view frame
    p_back = _interp(verts, faces, face_b, bary_b) @ rot.T
    n_front = (_surface_normals(mesh, face_f, bary_f, smooth) @ rot.T).astype(np.float32)
    n_back = (_surface_normals(mesh, face_b, bary_b, smooth) @ rot.T).astype(np.float32)

    mask = np.zeros(size * size, bool)
    mask[pix] = True
    out: dict[str, np.ndarray] = {"mask": mask.reshape(size, size)}

    def scatter(values: np.ndarray, dtype) -> np.ndarray:
        full = np.zeros((size * size, *values.shape[1:]), dtype)
        full[pix] = values
        return full.reshape(size, size, *values.shape[1:])

    if ortho:
        out["depth_front"] = scatter(p_front[:, 2], np.float32)
        out["depth_back"] = scatter(p_back[:, 2], np.float32)
    else:
        cam_c = np.array([0.0, 0.0, camera.distance])
        r_front = np.linalg.norm(p_front - cam_c, axis=1)
        r_back = np.linalg.norm(p_back - cam_c, axis=1)
        out["depth_front"] = scatter(encode_ray_depth(r_front, camera), np.float32)
        out["depth_back"] = scatter(encode_ray_depth(r_back, camera), np.float32)
    out["normal_front"] = scatter(n_front, np.float32)
    out["normal_back"] = scatter(n_back, np.float32)

    albedo = _albedo(mesh, face_f, bary_f, rng)
    view_dirs = -dirs[hit].astype(np.float32)  # view frame, toward the camera
    out["albedo"] = scatter(_to_uint8(albedo), np.uint8)
    out["image"] = scatter(_to_uint8(shade(albedo, n_front, view_dirs, rng)), np.uint8)
    out["calib"] = camera.calib
    if joints is not None:
        uv = project(np.asarray(joints, np.float64).reshape(-1, 3), camera)
        inside = np.all((uv > -0.5) & (uv < size - 0.5), axis=1)
        out["keypoints"] = uv.astype(np.float32)
        out["keypoints_visible"] = inside
    return out
