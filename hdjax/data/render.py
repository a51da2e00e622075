"""Headless CPU renderer for training data: embree ray casting, numpy shading, no OpenGL.

`render(mesh, camera, rng, joints=None)` takes a mesh already in the normalised frame (see
`hdjax.geometry.camera`: `pifu_normalization` / `twok2k_normalization`, then `normalize_mesh`) and
returns a dict of numpy arrays, all ``[row, col]`` indexed, H = W = ``camera.size``:

=================  =====================  ==================================================
key                shape / dtype          meaning
=================  =====================  ==================================================
``image``          (H, W, 3) uint8        shaded RGB (random SH light + AO), background 0
``albedo``         (H, W, 3) uint8        unshaded colour of the front surface, background 0
``mask``           (H, W) bool            a camera ray hits the mesh
``normal_front``   (H, W, 3) float32      unit outward normal at the nearest hit, view frame
``normal_back``    (H, W, 3) float32      unit outward normal at the farthest hit, view frame
``depth_front``    (H, W) float32         nearest hit; see below; background 0
``depth_back``     (H, W) float32         farthest hit; see below; background 0
``calib``          (4, 4) float32         ``camera.calib`` (normalised point -> uv or pixels)
``keypoints``      (J, 2) float32         only with ``joints``: projected (u, v) pixels
``keypoints_visible`` (J,) bool           only with ``joints``: inside the image (the
                                          records add an occlusion test: `records`)
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
bilinear), else vertex or face colours, else a random flat albedo.

Lighting (`shade`), as PIFu renders its training data: ``image = albedo · Σ_k c_k Y_k(n) ·
(1 − a · AO) + specular``, with the real order-2 spherical harmonics Y_k (9 per channel,
`sh_basis`) of the view-frame normal n and coefficients c (9, 3) drawn from ``rng``
(`random_sh`): an ambient DC term U(0.3, 0.55), 1–3 directional lights of total intensity
U(0.5, 1.0) (each projected on SH through the clamped-cosine kernel; 80 % on the camera
side, any elevation), each tinted by per-channel factors in 1 ± 0.08, and a small random
order-1/2 perturbation (std 0.04). Ambient occlusion stands in for PIFu's precomputed
visibility: per vertex (only those of visible triangles), the fraction of 16 fixed
cosine-weighted hemisphere rays (embree occlusion queries) that hit the mesh within 8 % of
its largest extent, interpolated at the hits and weighted by a ∈ U(0.7, 1)
(`ambient_occlusion`). A Blinn–Phong highlight of the strongest light, strength U(0, 0.12),
shininess U(8, 40). Ranges: the module's ``SH_*``, ``AO_*``, ``SPECULAR`` constants.
The keypoint ``visible`` flag only means "inside the image"; `surface_in_front` measures what
hides a point (the records' occlusion test).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import trimesh
from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh

from hdjax.geometry.camera import (
    Camera,
    OrthoCamera,
    camera_rays,
    direction_from_view,
    encode_ray_depth,
    footprint,
    from_view,
    project,
    to_view,
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


def surface_in_front(mesh: trimesh.Trimesh, camera: Camera, points: np.ndarray) -> np.ndarray:
    """How far in front of each point the first surface on the camera's ray through it is.

    Args:
      mesh: the triangles, in the normalised frame as `render` takes them.
      camera: the camera; points: (N, 3) finite points in the normalised frame.

    Returns:
      (N,) float64, normalised units along the ray: the distance from the ray's first hit
      to the point, ≤ 0 when the first hit is the point or lies behind it, −inf on a miss.
    """
    p = np.asarray(points, np.float64).reshape(-1, 3)
    view = to_view(p, camera)
    if isinstance(camera, OrthoCamera):
        # Beyond the mesh, as `render` starts its rays.
        radius = camera.scale * float(np.linalg.norm(mesh.vertices, axis=1).max())
        radius += float(np.linalg.norm(camera.translation)) + 1.0
        origins = np.concatenate([view[:, :2], np.full((len(p), 1), radius)], axis=1)
    else:
        origins = np.tile([0.0, 0.0, camera.distance], (len(p), 1))
    o = from_view(origins, camera)
    d = p - o
    face, _, t = _cast(_scene(mesh), o, d)  # the point itself is at t = 1
    length = np.linalg.norm(d, axis=1)
    return np.where(face == _MISS, -np.inf, (1.0 - t) * length)


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


# Real spherical harmonics up to order 2, the usual (l, m) order (00, 1−1, 10, 11, 2−2, 2−1,
# 20, 21, 22); Y_lm(n) = constant · polynomial of the unit normal n = (x, y, z).
SH_Y00 = 0.5 * math.sqrt(1.0 / math.pi)  # 0.282095
SH_Y1 = math.sqrt(3.0 / (4.0 * math.pi))  # 0.488603
SH_Y2 = 0.5 * math.sqrt(15.0 / math.pi)  # 1.092548 (2−2, 2−1, 21)
SH_Y20 = 0.25 * math.sqrt(5.0 / math.pi)  # 0.315392
SH_Y22 = 0.25 * math.sqrt(15.0 / math.pi)  # 0.546274
# max(cos θ, 0) = Σ_l a_l P_l(cos θ) + O(l ≥ 4): a directional light's irradiance.
_CLAMPED_COSINE = (0.25, 0.5, 5.0 / 16.0)

# Ranges of the random SH light (`random_sh`), all drawn uniformly.
SH_AMBIENT = (0.3, 0.55)  # the constant (DC) irradiance of the sky / room
SH_KEY = (0.5, 1.0)  # total intensity of the 1–3 directional lights
SH_FRONT_PROB = 0.8  # chance that a light is on the camera side (z > 0)
SH_TINT = 0.08  # per-channel colour factors in 1 ± SH_TINT, per light
SH_NOISE = 0.04  # std of a random order-1/2 perturbation (irregular surroundings)
SPECULAR = (0.0, 0.12)  # Blinn–Phong strength of the strongest light
SHININESS = (8.0, 40.0)
AO_STRENGTH = (0.7, 1.0)  # diffuse × (1 − strength · occlusion)
AO_RAYS = 16  # hemisphere rays per vertex
AO_DISTANCE = 0.08  # ray reach, as a fraction of the mesh's largest extent (~14 cm of a body)


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(N, 3) unit normals -> (N, 9) float32 real SH basis values Y_k(n), k = l² + l + m."""
    n = np.asarray(normals, np.float32)
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    one = np.ones_like(x)
    return np.stack(
        [
            SH_Y00 * one,
            SH_Y1 * y,
            SH_Y1 * z,
            SH_Y1 * x,
            SH_Y2 * x * y,
            SH_Y2 * y * z,
            SH_Y20 * (3.0 * z * z - 1.0),
            SH_Y2 * x * z,
            SH_Y22 * (x * x - y * y),
        ],
        axis=1,
    ).astype(np.float32)


def directional_sh(direction: np.ndarray) -> np.ndarray:
    """(9,) float64 SH coefficients of the irradiance of a unit directional light from
    ``direction``: ``Σ_k c_k Y_k(n) ≈ max(n·d, 0)`` (addition theorem:
    ``P_l(n·d) = 4π/(2l+1) Σ_m Y_lm(d) Y_lm(n)``)."""
    d = _unit(np.asarray(direction, np.float64))
    y = sh_basis(d[None])[0].astype(np.float64)
    gain = [4.0 * math.pi / (2 * l + 1) * _CLAMPED_COSINE[l] for l in (0, 1, 1, 1, 2, 2, 2, 2, 2)]
    return np.asarray(gain) * y


def random_sh(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random order-2 SH light (ranges: the module's ``SH_*`` constants).

    An ambient DC term, 1–3 directional lights (mostly on the camera side, from any
    elevation), each with a slight colour tint, and a small random order-1/2 perturbation.

    Returns:
      coefficients (9, 3) float32 (per RGB channel) and the direction (3,) of the strongest
      light (for the specular highlight).
    """
    coef = np.zeros((9, 3))
    coef[0] = rng.uniform(*SH_AMBIENT) / SH_Y00 * rng.uniform(1.0 - SH_TINT, 1.0, 3)
    count = int(rng.integers(1, 4))
    share = rng.dirichlet(np.full(count, 2.0)) * rng.uniform(*SH_KEY)
    key = None
    for intensity in share:
        d = _unit(rng.normal(size=3))
        if rng.random() < SH_FRONT_PROB:
            d[2] = abs(d[2])
        tint = rng.uniform(1.0 - SH_TINT, 1.0 + SH_TINT, 3)
        coef += np.outer(directional_sh(d), intensity * tint)
        if intensity == share.max():
            key = d
    coef[1:] += rng.normal(0.0, SH_NOISE, (8, 1)) * rng.uniform(0.8, 1.2, (8, 3))
    return coef.astype(np.float32), key.astype(np.float32)


def sh_irradiance(normals: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``max(Σ_k c_k Y_k(n), 0)``: (N, 3) unit normals, (9, 3) coefficients -> (N, 3) float32."""
    return np.clip(sh_basis(normals) @ np.asarray(coef, np.float32), 0.0, None)


def _hemisphere(k: int) -> np.ndarray:
    """(k, 3) cosine-weighted directions about +z: a Fibonacci spiral on the unit disc
    lifted to the hemisphere (deterministic, evenly spread)."""
    i = np.arange(k) + 0.5
    r = np.sqrt(i / k)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), np.sqrt(1.0 - r * r)], axis=1)


def ambient_occlusion(
    mesh: trimesh.Trimesh,
    vertices: np.ndarray | None = None,
    rays: int = AO_RAYS,
    distance: float = AO_DISTANCE,
    scene=None,
) -> np.ndarray:
    """Per-vertex ambient occlusion: the fraction of ``rays`` cosine-weighted hemisphere
    rays about the vertex normal that hit the mesh within ``distance`` · (largest extent).

    The ray pattern is fixed, turned about each normal by a per-vertex golden-angle step
    (deterministic, and no banding from one pattern shared by neighbours).

    Args:
      mesh: the triangles (any frame).
      vertices: optional (M,) vertex indices to compute (default all).
      rays: rays per vertex (K).
      distance: the rays' reach as a fraction of the mesh's largest bounding-box side.
      scene: an embree scene of ``mesh`` to reuse.

    Returns:
      (M,) float32 in [0, 1]: 0 open, 1 fully enclosed.
    """
    idx = np.arange(len(mesh.vertices)) if vertices is None else np.asarray(vertices)
    if len(idx) == 0:
        return np.zeros(0, np.float32)
    scene = _scene(mesh) if scene is None else scene
    extent = float(np.max(mesh.extents))
    n = _unit(np.asarray(mesh.vertex_normals, np.float64)[idx])
    # Tangent frame per vertex: any axis not parallel to n.
    axis = np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    t1 = _unit(np.cross(n, axis))
    t2 = np.cross(n, t1)
    turn = np.mod(idx * 2.399963229728653, 2.0 * math.pi)  # golden angle per vertex
    c, s = np.cos(turn)[:, None], np.sin(turn)[:, None]
    pat = _hemisphere(rays)
    px = c * pat[None, :, 0] - s * pat[None, :, 1]  # (M, K)
    py = s * pat[None, :, 0] + c * pat[None, :, 1]
    dirs = px[..., None] * t1[:, None] + py[..., None] * t2[:, None] + pat[None, :, 2:] * n[:, None]
    # Off the surface by a hair so that a ray does not hit the vertex's own triangles.
    origins = np.asarray(mesh.vertices, np.float64)[idx] + 1e-3 * extent * n
    origins = np.repeat(origins, rays, axis=0)
    reach = np.full(len(origins), distance * extent, np.float32)
    hit = scene.run(
        np.ascontiguousarray(origins, np.float32),
        np.ascontiguousarray(dirs.reshape(-1, 3), np.float32),
        dists=reach,
        query="OCCLUDED",
    )
    return (hit.reshape(len(idx), rays) != _MISS).mean(axis=1).astype(np.float32)


def shade(
    albedo: np.ndarray,
    normals: np.ndarray,
    view_dirs: np.ndarray,
    rng: np.random.Generator,
    occlusion: np.ndarray | None = None,
) -> np.ndarray:
    """Random spherical-harmonics lighting (PIFu's model): ``albedo · Σ_k c_k Y_k(n)``
    with `random_sh` coefficients, the diffuse term darkened by ambient occlusion, plus a
    small Blinn–Phong highlight of the strongest light.

    Args:
      albedo: (N, 3) float in [0, 1]; normals: (N, 3) unit, view frame;
      view_dirs: (N, 3) unit, from the surface toward the camera.
      rng: draws the light.
      occlusion: optional (N,) ambient occlusion in [0, 1] (`ambient_occlusion`).

    Returns:
      (N, 3) float32 in [0, 1].
    """
    # float32 throughout: this runs on millions of pixels and 8-bit output needs no more.
    albedo = np.asarray(albedo, np.float32)
    normals = np.asarray(normals, np.float32)
    coef, key = random_sh(rng)
    irradiance = sh_irradiance(normals, coef)
    ao_strength = np.float32(rng.uniform(*AO_STRENGTH))
    if occlusion is not None:
        irradiance *= (1.0 - ao_strength * np.asarray(occlusion, np.float32))[:, None]
    strength = np.float32(rng.uniform(*SPECULAR))
    shininess = np.float32(rng.uniform(*SHININESS))
    half = _unit(np.asarray(view_dirs, np.float32) + key).astype(np.float32)
    facing = normals @ key > 0
    blinn = np.clip(np.sum(normals * half, axis=1), 0.0, None) ** shininess
    spec = (strength * blinn * facing)[:, None]
    return np.clip(albedo * irradiance + spec, 0.0, 1.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * np.float32(255.0)), 0, 255).astype(np.uint8)


def render(
    mesh: trimesh.Trimesh,
    camera: Camera,
    rng: np.random.Generator,
    joints: np.ndarray | None = None,
    smooth: bool = True,
    ao_rays: int = AO_RAYS,
) -> dict[str, np.ndarray]:
    """Render a normalised mesh with `camera` (keys and conventions: module docstring).

    Args:
      mesh: triangle mesh in the normalised frame, outward-facing winding.
      camera: `OrthoCamera` (PIFuHD) or `PerspCamera` (2K2K); its pose (yaw, pitch, scale,
        shift) places the mesh in the view frame.
      rng: source of the random lighting (and of the flat albedo of uncoloured meshes).
      joints: optional (J, 3) normalised-frame 3D joints to project.
      smooth: interpolate vertex normals (else flat face normals).
      ao_rays: ambient-occlusion rays per vertex (0: no occlusion; the maps other than
        ``image`` do not depend on it).
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
    # The scene stays in the normalised frame; the rays go the other way through the pose.
    radius = camera.scale * float(np.linalg.norm(verts, axis=1).max())
    radius += float(np.linalg.norm(camera.translation)) + 1.0  # view-frame units
    if ortho:
        origins[:, 2] = radius
    o_world, d_world = from_view(origins, camera), direction_from_view(dirs, camera)
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
    p_front = to_view(_interp(verts, faces, face_f, bary_f), camera)
    p_back = to_view(_interp(verts, faces, face_b, bary_b), camera)
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
    occlusion = None
    if ao_rays > 0:
        # Per vertex, only for the vertices of the visible triangles, then interpolated.
        seen = np.unique(faces[face_f])
        per_vertex = np.zeros(len(verts), np.float32)
        per_vertex[seen] = ambient_occlusion(mesh, seen, ao_rays, scene=scene)
        occlusion = _interp(per_vertex[:, None], faces, face_f, bary_f)[:, 0]
    shaded = shade(albedo, n_front, view_dirs, rng, occlusion)
    out["image"] = scatter(_to_uint8(shaded), np.uint8)
    out["calib"] = camera.calib
    if joints is not None:
        uv = project(np.asarray(joints, np.float64).reshape(-1, 3), camera)
        inside = np.all((uv > -0.5) & (uv < size - 0.5), axis=1)
        out["keypoints"] = uv.astype(np.float32)
        out["keypoints_visible"] = inside
    return out
