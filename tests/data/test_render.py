"""Renderer against analytic depths and normals, depth round trips, keypoints."""

import numpy as np
import PIL.Image
import pytest
import trimesh

from hdjax.data import codecs
from hdjax.data import render as L
from hdjax.data.point_sampling import label_points
from hdjax.data.render import render
from hdjax.geometry import camera as C

R = 0.5  # sphere radius


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=5, radius=R)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _ortho_xy(size):
    u, v = C.pixel_grid(size)
    half = (size - 1) / 2
    return u / half - 1, 1 - v / half


def test_ortho_sphere_depth_normals_mask(sphere):
    size = 128
    out = render(sphere, C.OrthoCamera(size, yaw_deg=17.0), _rng())
    x, y = _ortho_xy(size)
    rho = np.hypot(x, y)
    # The mask is the analytic disc except in a one-pixel ring around the silhouette.
    ring = np.abs(rho - R) < 2.0 / (size - 1)
    assert np.array_equal(out["mask"][~ring], (rho < R)[~ring])
    core = rho < 0.9 * R  # away from the silhouette, where depth is steep
    z = np.sqrt(np.clip(R**2 - rho**2, 0, None))
    # Polyhedral sphere: measured 3e-4 (the facets' sagitta and float32 rays); 2e-3 is 0.4 %
    # of the radius, still far below a half-pixel (8e-3) convention error.
    np.testing.assert_allclose(out["depth_front"][core], z[core], atol=2e-3)
    np.testing.assert_allclose(out["depth_back"][core], -z[core], atol=2e-3)
    n = np.stack([x, y, z], -1) / R
    nb = np.stack([x, y, -z], -1) / R
    # Smooth normals: within 0.01 (≈0.6°) of the analytic ones.
    np.testing.assert_allclose(out["normal_front"][core], n[core], atol=1e-2)
    np.testing.assert_allclose(out["normal_back"][core], nb[core], atol=1e-2)
    assert np.all(out["depth_front"][~out["mask"]] == 0)
    assert np.all(out["image"][~out["mask"]] == 0)
    assert out["image"][out["mask"]].max() > 0
    np.testing.assert_array_equal(out["calib"], C.OrthoCamera(size, 17.0).calib)


def test_persp_sphere_ray_distance(sphere):
    cam = C.PerspCamera(size=96)
    small = sphere.copy()
    small.vertices *= 0.6  # radius 0.3, inside the 50° view from distance 1
    rs = 0.6 * R
    out = render(small, cam, _rng())
    _, dirs = C.camera_rays(cam)
    # Ray (0,0,1) + t·dir meets the sphere |p| = rs at t = b ± sqrt(b² − c).
    b = -dirs[..., 2]  # −dir·origin with origin (0, 0, 1)
    disc = b**2 - (1 - rs**2)
    core = disc > 0.2 * rs**2
    t_near = b - np.sqrt(np.clip(disc, 0, None))
    t_far = b + np.sqrt(np.clip(disc, 0, None))
    assert np.array_equal(out["mask"][core], np.ones(core.sum(), bool))
    assert not out["mask"][disc < -0.05].any()
    r_front = C.decode_ray_depth(out["depth_front"], cam)
    r_back = C.decode_ray_depth(out["depth_back"], cam)
    np.testing.assert_allclose(r_front[core], t_near[core], atol=1e-3)
    np.testing.assert_allclose(r_back[core], t_far[core], atol=1e-3)
    assert np.all(out["depth_front"][core] < out["depth_back"][core])
    # Outward normals: the front faces the camera, the back faces away.
    assert np.all(out["normal_front"][core][:, 2] > 0)
    assert np.all(out["normal_back"][core][:, 2] < 0)


def test_yaw_equals_rotating_the_mesh():
    box = trimesh.creation.box((0.6, 1.2, 0.3))
    cam = C.OrthoCamera(64, yaw_deg=35.0)
    turned = box.copy()
    turned.vertices = C.to_view(box.vertices, cam)
    a = render(box, cam, _rng(1))
    b = render(turned, C.OrthoCamera(64), _rng(1))
    inner = a["mask"] & b["mask"]
    assert np.mean(a["mask"] != b["mask"]) < 0.01
    np.testing.assert_allclose(a["depth_front"][inner], b["depth_front"][inner], atol=1e-4)
    np.testing.assert_allclose(a["depth_back"][inner], b["depth_back"][inner], atol=1e-4)


@pytest.mark.parametrize("cam", [C.OrthoCamera(64, 25.0), C.PerspCamera(size=64, yaw_deg=-20)])
def test_front_back_bracket_inside_points(cam):
    # A tilted torus: rays cross it up to four times; inside points must lie between the
    # nearest and the farthest hit of their ray.
    torus = trimesh.creation.torus(major_radius=0.22, minor_radius=0.08)
    # Ring turned from the x-y plane by 70° about x: most rays cross the tube twice.
    torus.apply_transform(trimesh.transformations.rotation_matrix(np.radians(70), [1, 0, 0]))
    out = render(torus, cam, _rng())
    rows, cols = np.nonzero(out["mask"])
    origins, dirs = C.camera_rays(cam)
    o, d = origins[rows, cols], dirs[rows, cols]
    # Both ray families cross the torus for t in about [0.65, 1.35] (ortho: from z = 1).
    t = np.random.default_rng(2).uniform(0.6, 1.4, (len(rows), 32))
    if isinstance(cam, C.OrthoCamera):
        o = o.copy()
        o[:, 2] = 1.0
    pts_view = o[:, None] + d[:, None] * t[..., None]
    inside = label_points(torus, C.from_view(pts_view.reshape(-1, 3), cam)).reshape(t.shape)
    assert inside.sum() > 200
    if isinstance(cam, C.OrthoCamera):
        depth = pts_view[..., 2]
        front = out["depth_front"][rows, cols][:, None]
        back = out["depth_back"][rows, cols][:, None]
        ok = (depth <= front + 1e-4) & (depth >= back - 1e-4)
    else:
        r = np.linalg.norm(pts_view - [0, 0, cam.distance], axis=-1)
        front = C.decode_ray_depth(out["depth_front"][rows, cols], cam)[:, None]
        back = C.decode_ray_depth(out["depth_back"][rows, cols], cam)[:, None]
        ok = (r >= front - 1e-4) & (r <= back + 1e-4)
    assert np.all(ok[inside])


@pytest.mark.parametrize("cam", [C.OrthoCamera(128, 40.0), C.PerspCamera(size=128, yaw_deg=30)])
def test_keypoint_on_limb_lands_on_mask(cam):
    limb = trimesh.creation.capsule(height=0.5, radius=0.04)  # a thin "forearm" along z
    axis = np.array([0.8, 0.6, 0.3]) / np.linalg.norm([0.8, 0.6, 0.3])
    centre = np.array([0.05, 0.1, -0.05])
    turn = trimesh.geometry.align_vectors([0, 0, 1], axis)
    turn[:3, 3] = centre
    limb.apply_transform(turn)
    axis_pts = centre + np.linspace(-0.2, 0.2, 5)[:, None] * axis
    assert label_points(limb, axis_pts).all()  # the joints are inside the limb
    far = np.array([[0.9, 0.9, 0.0]])
    out = render(limb, cam, _rng(), joints=np.r_[axis_pts, far])
    kp = np.rint(out["keypoints"][:5]).astype(int)
    assert out["keypoints"].shape == (6, 2)
    assert out["keypoints_visible"][:5].all()
    assert out["mask"][kp[:, 1], kp[:, 0]].all()
    # A point far off the limb projects off the mask.
    u, v = np.rint(out["keypoints"][5]).astype(int)
    assert not (out["keypoints_visible"][5] and out["mask"][v, u])


def test_depth_to_points_lies_on_the_surface():
    box = trimesh.creation.box((0.3, 0.5, 0.2))
    cam = C.PerspCamera(size=128, yaw_deg=30.0)
    out = render(box, cam, _rng())
    for key in ("depth_front", "depth_back"):
        # Through the uint16 PNG encoding.
        d = codecs.png_to_persp_depth(codecs.persp_depth_to_png(out[key]))
        pts, pix = C.depth_to_points(d, cam, divisor=1.0)
        assert len(pts) == out["mask"].sum()
        assert np.array_equal(out["mask"][pix[:, 0], pix[:, 1]], np.ones(len(pix), bool))
        p = C.from_view(pts, cam)
        # Distance to the box surface (all points are on or near it).
        sdf = np.max(np.abs(p) - [0.15, 0.25, 0.1], axis=1)
        assert np.abs(sdf).max() < 2e-4
        official, _ = C.depth_to_points(d, cam)
        np.testing.assert_allclose(official * C.TWOK2K_OUTPUT_DIVISOR, pts, atol=1e-12)


def test_colours_from_vertex_colours_and_texture():
    box = trimesh.creation.box((0.5, 0.5, 0.5))
    box.visual.vertex_colors = np.tile([200, 30, 60, 255], (len(box.vertices), 1))
    out = render(box, C.OrthoCamera(32), _rng())
    assert out["mask"].sum() > 30
    assert np.all(out["albedo"][out["mask"]] == [200, 30, 60])

    sphere = trimesh.creation.uv_sphere(radius=0.4)
    uv = np.c_[
        np.arctan2(sphere.vertices[:, 1], sphere.vertices[:, 0]) / (2 * np.pi) + 0.5,
        np.full(len(sphere.vertices), 0.5),
    ]
    tex = np.zeros((4, 8, 3), np.uint8)
    tex[:, :4] = (255, 0, 0)
    tex[:, 4:] = (0, 0, 255)
    sphere.visual = trimesh.visual.TextureVisuals(uv=uv, image=PIL.Image.fromarray(tex))
    out = render(sphere, C.OrthoCamera(64), _rng())
    alb = out["albedo"].astype(int)
    x, y = _ortho_xy(64)
    sel = out["mask"] & (np.hypot(x, y) < 0.3)
    # uv u < 0.5 (red) is y < 0 in this mapping; stay clear of the seams at y = 0.
    red = sel & (y < -0.1)
    blue = sel & (y > 0.1)
    assert red.sum() > 50 and blue.sum() > 50
    assert np.all(alb[red][:, 0] > 200) and np.all(alb[red][:, 2] < 50)
    assert np.all(alb[blue][:, 2] > 200) and np.all(alb[blue][:, 0] < 50)


def test_lighting_is_random_but_seeded(sphere):
    cam = C.OrthoCamera(48)
    a = render(sphere, cam, _rng(5))["image"]
    b = render(sphere, cam, _rng(5))["image"]
    c = render(sphere, cam, _rng(6))["image"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0


@pytest.mark.parametrize("cam", [C.OrthoCamera(32), C.PerspCamera(size=32)])
def test_mesh_out_of_view_gives_empty_maps(cam):
    far_away = trimesh.creation.icosphere(2, radius=0.1)
    far_away.apply_translation((5.0, 0.0, 0.0))
    out = render(far_away, cam, _rng())
    assert not out["mask"].any()
    assert not out["depth_front"].any() and not out["image"].any()
    with pytest.raises(ValueError, match="without faces"):
        render(trimesh.Trimesh(), cam, _rng())


# ----------------------------------------------------------------------- lighting


def _sphere_normals(n=20000):
    """(n, 3) evenly spread unit vectors (Fibonacci sphere)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = i * np.pi * (3 - np.sqrt(5))
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def test_sh_basis_hand_values():
    y = L.sh_basis(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]))
    # Y00 = 1/(2√π), Y1m = √(3/4π)·(y, z, x), Y2m: √(15/π)/2·xy, ·yz, √(5/π)/4·(3z² − 1),
    # √(15/π)/2·xz, √(15/π)/4·(x² − y²).
    up = [0.282095, 0, 0.488603, 0, 0, 0, 0.630783, 0, 0]
    right = [0.282095, 0, 0, 0.488603, 0, 0, -0.315392, 0, 0.546274]
    diag = [0.282095, 0.390882, 0, 0.293162, 0.524423, 0, -0.315392, 0, -0.152957]
    np.testing.assert_allclose(y, [up, right, diag], atol=5e-6)


def test_sh_basis_is_orthonormal():
    y = L.sh_basis(_sphere_normals()).astype(np.float64)
    gram = 4 * np.pi * y.T @ y / len(y)
    # Quadrature on 20,000 spiral points: measured 2e-6 off the identity.
    np.testing.assert_allclose(gram, np.eye(9), atol=1e-3)


def test_constant_sh_gives_uniform_shading():
    coef = np.zeros((9, 3))
    coef[0] = np.array([0.9, 0.5, 0.3]) / L.SH_Y00
    normals = _sphere_normals(500)
    shading = L.sh_irradiance(normals, coef)
    np.testing.assert_allclose(shading, np.tile([0.9, 0.5, 0.3], (500, 1)), atol=1e-6)


def test_directional_sh_is_the_clamped_cosine_to_order_two():
    d = np.array([0.0, 0.6, 0.8])
    coef = np.repeat(L.directional_sh(d)[:, None], 3, axis=1)
    n = np.array([d, -d, [1.0, 0.0, 0.0]])
    # 1/4 + 1/2·cos θ + 5/16·(3cos²θ − 1)/2 at cos θ = 1, −1, 0.
    np.testing.assert_allclose(L.sh_irradiance(n, coef)[:, 0], [1.0625, 0.0625, 0.09375], atol=1e-5)


def test_random_lights_come_from_varied_directions():
    normals = _sphere_normals(2000)
    brightest, means = [], []
    for seed in range(60):
        coef, key = L.random_sh(np.random.default_rng(seed))
        grey = L.sh_irradiance(normals, coef).mean(axis=1)
        brightest.append(normals[np.argmax(grey)])
        means.append(grey.mean())
        assert abs(np.linalg.norm(key) - 1) < 1e-5
    brightest = np.array(brightest)
    # Spread over the sphere (a fixed light would give a resultant length of 1), mostly
    # from the camera's side.
    assert np.linalg.norm(brightest.mean(axis=0)) < 0.7
    assert (brightest[:, 2] > 0).mean() > 0.6
    assert 0.3 < min(means) and max(means) < 1.0


def test_ambient_occlusion_concave_corner_above_convex():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    inner = box.copy()
    inner.invert()  # the inside of a room: every corner is concave
    corners = np.arange(8)
    convex = L.ambient_occlusion(box, corners, distance=0.2)
    concave = L.ambient_occlusion(inner, corners, distance=0.2)
    np.testing.assert_array_equal(convex, 0.0)
    # Three walls meet: the rays leaning into a wall hit it (measured 0.56-0.63).
    assert np.all(concave > 0.3)
    assert np.array_equal(L.ambient_occlusion(inner, corners, distance=0.2), concave)


def test_ambient_occlusion_darkens_a_fold(sphere):
    """Two spheres nearly touching: the vertices facing the gap are occluded."""
    a = sphere.copy()
    b = sphere.copy()
    b.apply_translation([2 * R + 0.02, 0, 0])
    both = trimesh.util.concatenate([a, b])
    occ = L.ambient_occlusion(both)
    gap = both.vertices[:, 0] > 0.9 * R
    gap &= both.vertices[:, 0] < R + 0.02
    far = both.vertices[:, 0] < -0.9 * R
    assert occ[gap].mean() > 0.3 and occ[far].max() == 0.0


def test_lighting_is_seeded(sphere):
    cam = C.OrthoCamera(64)
    a = render(sphere, cam, _rng(5))
    b = render(sphere, cam, _rng(5))
    c = render(sphere, cam, _rng(6))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert np.abs(a["image"].astype(int) - c["image"].astype(int)).mean() > 2
    np.testing.assert_array_equal(a["normal_front"], c["normal_front"])
    # Without occlusion (a convex sphere has none) the image is the same.
    np.testing.assert_array_equal(render(sphere, cam, _rng(5), ao_rays=0)["image"], a["image"])
