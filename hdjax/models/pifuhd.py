"""PIFuHD: coarse level (normal nets + 4-stack hourglass + MLP with phi) and fine level.

Parameter tree (mirrors the official `HGPIFuMRNet` state dict):
  netG/netF, netG/netB   GlobalGenerator  front / back normal nets
  netG/image_filter      HGFilter         coarse filter (512² input -> 128² x 256)
  netG/mlp               ImplicitMLP      coarse MLP (257 -> ... -> 1, phi 256-d)
  image_filter           HGFilter         fine filter (1024² input -> 512² x 16)
  mlp                    ImplicitMLP      fine MLP (16 + 256 -> ... -> 1)

Every method is a pure function of (params, inputs) through `PIFuHD(arch).apply(...,
method=PIFuHD.<name>)`; all hourglass stacks are returned so training can supervise each.
Calibrations keep the official names: `calib_global` projects into the whole image (coarse
level), `calib_local` into the fine level's crop; both are keyword-only.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import zlib
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hdjax import configlib
from hdjax.errors import HdjaxError
from hdjax.geometry.grid_sample import grid_sample_align_corners
from hdjax.geometry.projection import orthogonal
from hdjax.models.hourglass import DOWN_TYPES, HGFilter
from hdjax.models.implicit_mlp import ImplicitMLP
from hdjax.models.layers import BIAS_INIT, KERNEL_INIT, Numerics, resize_align_corners
from hdjax.models.pix2pixhd import GlobalGenerator

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class LevelArch:
    """One PIFu level: hourglass filter + implicit MLP (names follow the official options)."""

    num_stack: int
    hg_depth: int
    hg_dim: int
    hg_down: str
    mlp_dim: tuple[int, ...]
    mlp_res_layers: tuple[int, ...]
    merge_layer: int
    hg_width: int = 256
    groups: int = 32

    def __post_init__(self):
        if self.hg_down not in DOWN_TYPES:
            raise ValueError(f"hg_down={self.hg_down!r}: expected one of {DOWN_TYPES}")
        if self.num_stack < 1:
            raise ValueError(f"num_stack={self.num_stack}: must be >= 1")
        if self.hg_width % self.groups:
            raise ValueError(f"groups={self.groups}: must divide hg_width={self.hg_width}")

    @property
    def min_size(self) -> int:
        """The smallest input side the filter takes (stem stride x pooling x hourglass)."""
        return (4 if self.hg_down == "ave_pool" else 2) * 2**self.hg_depth


@dataclasses.dataclass(frozen=True)
class PIFuHDArch:
    """The whole architecture; the defaults of `configs/pifuhd.py` are the released model."""

    coarse: LevelArch
    fine: LevelArch
    use_front_normal: bool = True
    use_back_normal: bool = True
    normal_ngf: int = 64
    normal_n_down: int = 4
    normal_n_blocks: int = 9
    coarse_size: int = 512  # opt_netG.loadSize: coarse input and depth-feature scale
    fine_size: int = 1024  # opt.loadSizeBig: fine input; normal maps are upsampled to it
    z_size: float = 200.0

    @property
    def z_scale(self) -> float:
        """Coarse depth feature = z * z_scale (official: (loadSize // 2) / z_size = 1.28)."""
        return (self.coarse_size // 2) / self.z_size

    @property
    def num_normals(self) -> int:
        return int(self.use_front_normal) + int(self.use_back_normal)

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict, path: str = "model.arch") -> PIFuHDArch:
        return configlib.build(cls, cfg, path)


OFFICIAL_Z_SCALE = 256 / 200.0  # the released model's depth feature: z · 1.28


def check_config(cfg: ml_collections.ConfigDict) -> None:
    """Raises `HdjaxError` (one line naming the field) for an impossible architecture, and
    warns about a depth feature far from the official scale: at a fraction of it the MLP
    sees too little z beside the image features to learn depth and extrudes the silhouette
    through the whole cube (issue #21: coarse_size 64 with z_size 200 gives z · 0.16)."""
    arch = PIFuHDArch.from_config(cfg.model.arch)
    for field, value in (
        ("train.occupancy_gamma", cfg.train.get("occupancy_gamma", 0.0)),
        ("input.pipeline.free_points", cfg.input.pipeline.get("free_points", 0.0)),
        ("input.pipeline.free_background", cfg.input.pipeline.get("free_background", 0.0)),
    ):
        if not 0.0 <= value < 1.0:
            raise HdjaxError(f"{field}={value}: must be in [0, 1)")
    if not 0.5 <= arch.z_scale / OFFICIAL_Z_SCALE <= 2.0:
        logging.warning(
            "model.arch.z_size=%g with coarse_size=%d makes the depth feature z * %.3g (official "
            "z * 1.28): the model may not learn depth; z_size=%g keeps the official scale",
            arch.z_size,
            arch.coarse_size,
            arch.z_scale,
            (arch.coarse_size // 2) / OFFICIAL_Z_SCALE,
        )


def numerics_from_config(
    cfg: ml_collections.ConfigDict, path: str = "model.numerics", *, training: bool = False
) -> Numerics:
    """`Numerics` of `cfg`. conv_impl "auto" takes the CPU kernels for inference on a CPU
    backend, XLA's convolutions otherwise: the CPU kernels are tuned for the forward pass,
    and their backward pass ran 10× slower than XLA's conv (tiny normal nets on a 2-core
    CPU: 3.0 s vs 0.32 s per training step, measured). Training on a CPU backend also takes
    the matmul gradients of 1x1 convs and the piecewise kernel gradients of k x k convs
    (conv_grad "split"); GPU/TPU keep XLA's."""
    cfg = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
    if cfg.get("conv_impl") == "auto":
        cpu = jax.default_backend() == "cpu"
        cfg["conv_impl"] = "cpu" if cpu and not training else "xla"
        if cpu and training:
            cfg.setdefault("conv_grad", "split")
    return configlib.build(Numerics, cfg, path)


def _filter(level: LevelArch, numerics: Numerics, name: str) -> HGFilter:
    return HGFilter(
        level.num_stack,
        level.hg_depth,
        level.hg_dim,
        level.hg_down,
        level.hg_width,
        level.groups,
        numerics,
        name=name,
    )


def _mlp(level: LevelArch, numerics: Numerics, name: str) -> ImplicitMLP:
    return ImplicitMLP(level.mlp_dim, level.mlp_res_layers, level.merge_layer, numerics, name=name)


def _sample(feat: jnp.ndarray, xy: jnp.ndarray) -> jnp.ndarray:
    # Sample positions stay float32: a bfloat16 uv would snap to 1/128 of the map.
    return grid_sample_align_corners(feat, xy).astype(feat.dtype)


class CoarseLevel(nn.Module):
    """`HGPIFuNetwNML`: normal nets, coarse filter and coarse MLP."""

    arch: PIFuHDArch
    numerics: Numerics = Numerics()

    def setup(self):
        a, nx = self.arch, self.numerics
        gen = dict(out_ch=3, ngf=a.normal_ngf, n_down=a.normal_n_down, n_blocks=a.normal_n_blocks)
        if a.use_front_normal:
            self.netF = GlobalGenerator(**gen, numerics=nx)
        if a.use_back_normal:
            self.netB = GlobalGenerator(**gen, numerics=nx)
        self.image_filter = _filter(a.coarse, nx, "image_filter")
        self.mlp = _mlp(a.coarse, nx, "mlp")

    def features(self, image: jnp.ndarray, normals: Sequence[jnp.ndarray]) -> list[jnp.ndarray]:
        """Image (B, S, S, 3) + normal maps -> per-stack features [(B, S/4, S/4, hg_dim)]."""
        x = jnp.concatenate([image, *normals], axis=-1)
        return self.image_filter(x)[0]

    def query(self, feats, points, calib_global, phi_only: bool = False):
        """Per-stack logits (stack, B, N), the last stack's phi (B, N, 256) and in_bb (B, N)."""
        xyz = orthogonal(points, calib_global)
        in_bb = jnp.all((xyz >= -1) & (xyz <= 1), axis=-1)
        z_feat = (xyz[..., 2:3] * self.arch.z_scale).astype(feats[0].dtype)
        logits, phi = [], None
        for feat in feats:
            point_feat = jnp.concatenate([_sample(feat, xyz[..., :2]), z_feat], -1)
            logit, phi = self.mlp(point_feat, phi_only=phi_only)
            if logit is not None:
                logits.append(logit[..., 0])
        return (jnp.stack(logits) if logits else None), phi, in_bb


class PIFuHD(nn.Module):
    """`HGPIFuMRNet`: the fine level, owning the coarse level as `netG`.

    Attributes:
      arch: the architecture (parameter shapes).
      numerics: how layers compute (conv implementation, dtype, precision); parameters and
        their names do not depend on it.
    """

    arch: PIFuHDArch
    numerics: Numerics = Numerics()

    def setup(self):
        self.netG = CoarseLevel(self.arch, self.numerics)
        self.image_filter = _filter(self.arch.fine, self.numerics, "image_filter")
        self.mlp = _mlp(self.arch.fine, self.numerics, "mlp")

    def front_normal(self, image_coarse: jnp.ndarray) -> jnp.ndarray:
        """(B, S, S, 3) image in [-1, 1] -> front normal map (B, S, S, 3) in [-1, 1]."""
        return self.netG.netF(image_coarse)

    def back_normal(self, image_coarse: jnp.ndarray) -> jnp.ndarray:
        """(B, S, S, 3) image in [-1, 1] -> back normal map (B, S, S, 3) in [-1, 1]."""
        return self.netG.netB(image_coarse)

    def normals(self, image_coarse: jnp.ndarray) -> list[jnp.ndarray]:
        """The normal maps the architecture uses, [front, back] (each optional)."""
        out = []
        if self.arch.use_front_normal:
            out.append(self.front_normal(image_coarse))
        if self.arch.use_back_normal:
            out.append(self.back_normal(image_coarse))
        return out

    def coarse_features(self, image_coarse: jnp.ndarray, normals) -> list[jnp.ndarray]:
        """(B, S, S, 3) whole image + normal maps -> per-stack [(B, S/4, S/4, hg_dim)]."""
        return self.netG.features(image_coarse, normals)

    def fine_input(
        self,
        image_fine: jnp.ndarray,
        normals: Sequence[jnp.ndarray],
        crop_offset: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """The fine filter's input (B, h, w, 3 + 3 * num_normals): image ⊕ upsampled normals.

        As the official `filter_local(images, rect)`: the normal maps are upsampled
        bilinearly (align_corners=True) to `arch.fine_size`² and the window of the fine image
        is cut out of them at `crop_offset`.

        Args:
          image_fine: (B, h, w, 3), the whole (resized) image or a training crop of it.
          normals: the coarse level's normal maps of the whole image, each (B, S, S, 3).
          crop_offset: (B, 2) int (row, col) of the crop's top-left corner in `fine_size`
            pixels (the official rect's (y1, x1)); offsets past the border are clamped.
            None: the fine image is the whole image, the normals are resized to its size.
        """
        h, w = image_fine.shape[1], image_fine.shape[2]
        if crop_offset is None:
            up = [resize_align_corners(n, (h, w), "bilinear") for n in normals]
        else:
            big = (self.arch.fine_size, self.arch.fine_size)
            whole = jnp.concatenate([resize_align_corners(n, big, "bilinear") for n in normals], -1)
            up = [
                jax.vmap(
                    lambda x, o: jax.lax.dynamic_slice(x, (o[0], o[1], 0), (h, w, x.shape[-1]))
                )(whole, jnp.asarray(crop_offset, jnp.int32))
            ]
        return jnp.concatenate([image_fine, *up], axis=-1)

    def fine_features(
        self,
        image_fine: jnp.ndarray,
        normals: Sequence[jnp.ndarray],
        crop_offset: jnp.ndarray | None = None,
    ) -> list[jnp.ndarray]:
        """Fine image (B, h, w, 3) + whole-image normal maps -> per-stack [(B, h/2, w/2, C)];
        `crop_offset` as in `fine_input`."""
        x = self.fine_input(image_fine, normals, crop_offset)
        return self.image_filter(x.astype(self.numerics.jnp_dtype))[0]

    def coarse_query(self, coarse_feats, points, *, calib_global, phi_only: bool = False):
        """Coarse level at points (B, N, 3) with the whole-image calibration (B, 4, 4).

        Returns (per-stack logits (Sc, B, N) or None with phi_only, phi (B, N, 256) of the
        last stack, in_bb (B, N) bool: x, y, z inside [-1, 1]).
        """
        return self.netG.query(coarse_feats, points, calib_global, phi_only=phi_only)

    def query(self, coarse_feats, fine_feats, points, *, calib_global, calib_local):
        """Occupancy of points for training and analysis.

        Args:
          coarse_feats / fine_feats: per-stack feature maps from the two filters.
          points: (B, N, 3) in the query frame.
          calib_global: (B, 4, 4) projection into the whole image (coarse level).
          calib_local: (B, 4, 4) projection into the fine image (the crop when training).
        Returns dict of
          coarse_logits (Sc, B, N), fine_logits (Sf, B, N) pre-sigmoid per stack,
          phi (B, N, 256), in_bb_coarse / in_bb_fine (B, N) bool,
          occ (B, N) = sigmoid(last fine logit) * in_bb_fine (the official prediction).
        """
        coarse_logits, phi, in_bb_c = self.coarse_query(
            coarse_feats, points, calib_global=calib_global
        )
        fine_logits, in_bb_f = self._fine_logits(fine_feats, points, calib_local, phi)
        return dict(
            coarse_logits=coarse_logits,
            fine_logits=fine_logits,
            phi=phi,
            in_bb_coarse=in_bb_c,
            in_bb_fine=in_bb_f,
            occ=jax.nn.sigmoid(fine_logits[-1].astype(jnp.float32)) * in_bb_f,
        )

    def occupancy(self, coarse_feat, fine_feat, points, *, calib_global, calib_local):
        """Inference: last-stack features (B, h, w, C) -> occupancy (B, N) of points (B, N, 3).

        Skips the coarse MLP layers after phi, which the fine prediction does not use.
        """
        _, phi, _ = self.coarse_query(
            [coarse_feat], points, calib_global=calib_global, phi_only=True
        )
        logits, in_bb = self._fine_logits([fine_feat], points, calib_local, phi)
        return jax.nn.sigmoid(logits[-1].astype(jnp.float32)) * in_bb

    def coarse_occupancy(self, coarse_feat, points, *, calib_global):
        """The coarse level alone: last-stack features (B, h, w, C) -> occupancy (B, N) of
        points (B, N, 3) (a checkpoint whose fine level is not trained yet)."""
        logits, _, in_bb = self.coarse_query([coarse_feat], points, calib_global=calib_global)
        return jax.nn.sigmoid(logits[-1].astype(jnp.float32)) * in_bb

    def _fine_logits(self, fine_feats, points, calib_local, phi):
        xyz = orthogonal(points, calib_local)
        in_bb = jnp.all((xyz[..., :2] >= -1) & (xyz[..., :2] <= 1), axis=-1)
        logits = []
        for feat in fine_feats:
            point_feat = jnp.concatenate([_sample(feat, xyz[..., :2]), phi], -1)
            logits.append(self.mlp(point_feat)[0][..., 0])
        return jnp.stack(logits), in_bb

    def __call__(
        self, image_coarse, image_fine, points, *, calib_global, calib_local, crop_offset=None
    ):
        """Whole forward pass (used for init and training); returns `query`'s dict + normals."""
        normals = self.normals(image_coarse)
        out = self.query(
            self.coarse_features(image_coarse, normals),
            self.fine_features(image_fine, normals, crop_offset),
            points,
            calib_global=calib_global,
            calib_local=calib_local,
        )
        out["normals"] = normals
        return out


def init_inputs(arch: PIFuHDArch, size_scale: int = 1) -> tuple[tuple, dict]:
    """The smallest inputs `PIFuHD(arch).init` takes (the nets are fully convolutional, so
    parameter shapes do not depend on the image size): (args, keyword args)."""
    s_c = max(arch.coarse.min_size, 2**arch.normal_n_down) * size_scale
    s_f = arch.fine.min_size * size_scale
    calib = jnp.eye(4)[None]
    args = (jnp.zeros((1, s_c, s_c, 3)), jnp.zeros((1, s_f, s_f, 3)), jnp.zeros((1, 1, 3)))
    return args, dict(calib_global=calib, calib_local=calib)


@functools.lru_cache(maxsize=8)
def param_shapes(arch: PIFuHDArch) -> Params:
    """Shape tree of the full model's params (no computation, no memory). Do not mutate."""
    args, kw = init_inputs(arch)
    tree = jax.eval_shape(PIFuHD(arch).init, jax.random.PRNGKey(0), *args, **kw)
    return flax.core.unfreeze(tree["params"])


_BLOCK = 1 << 20


@functools.cache
def _draw_block():
    return jax.jit(lambda key: KERNEL_INIT(key, (_BLOCK,), jnp.float32))


def _draw_kernel(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`KERNEL_INIT(key', shape)` assembled from fixed-size blocks: the draws are iid, so one
    compiled program serves every shape (per-shape programs cost ~0.3 s each to compile)."""
    n = int(np.prod(shape))
    out = np.empty(n, np.float32)
    for i, start in enumerate(range(0, n, _BLOCK)):
        block = np.asarray(_draw_block()(jax.random.fold_in(key, i)))
        out[start : start + _BLOCK] = block[: n - start]
    return jnp.asarray(out.reshape(shape))


def init_params(arch: PIFuHDArch, seed: int, subtree: tuple[str, ...] = ()) -> Params:
    """Random params of `arch` (or of one subtree) from the modules' own initialisers.

    The same distributions as `PIFuHD(arch).init` (official: `layers.KERNEL_INIT` N(0, 0.02)
    kernels, zero biases, norm scales 1), drawn leaf by leaf from
    `fold_in(PRNGKey(seed), crc32(path))`, so a subtree holds the same values alone as in the
    full tree and only the subtree being run is in memory. (A jitted `init` of the official
    architecture compiles for most of a minute, 764 random programs, and peaks at three
    times the parameters' memory.)
    """
    shapes = param_shapes(arch)
    for k in subtree:
        shapes = shapes[k]
    key = jax.random.PRNGKey(seed)

    def draw(key_path, shape):
        names = (*subtree, *(k.key for k in key_path))
        if names[-1] == "kernel":
            return _draw_kernel(
                jax.random.fold_in(key, zlib.crc32("/".join(names).encode())), shape.shape
            )
        init = {"bias": BIAS_INIT, "scale": nn.initializers.ones}[names[-1]]
        return init(key, shape.shape, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)
