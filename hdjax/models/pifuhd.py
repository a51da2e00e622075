"""PIFuHD: coarse level (normal nets + 4-stack hourglass + MLP with phi) and fine level.

Parameter tree (mirrors the official `HGPIFuMRNet` state dict):
  netG/netF, netG/netB   GlobalGenerator  front / back normal nets
  netG/image_filter      HGFilter         coarse filter (512² input -> 128² x 256)
  netG/mlp               ImplicitMLP      coarse MLP (257 -> ... -> 1, phi 256-d)
  image_filter           HGFilter         fine filter (1024² input -> 512² x 16)
  mlp                    ImplicitMLP      fine MLP (16 + 256 -> ... -> 1)

Every method is a pure function of (params, inputs) through `PIFuHD(arch).apply(...,
method=...)`; all hourglass stacks are returned so training can supervise each of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from hdjax.geometry.grid_sample import grid_sample_align_corners
from hdjax.geometry.projection import orthogonal
from hdjax.models.hourglass import HGFilter
from hdjax.models.implicit_mlp import ImplicitMLP
from hdjax.models.layers import resize_align_corners
from hdjax.models.pix2pixhd import GlobalGenerator


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


@dataclasses.dataclass(frozen=True)
class PIFuHDArch:
    """The whole architecture; `official()` is the released `pifuhd.pt` configuration."""

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
    def from_config(cls, cfg: ml_collections.ConfigDict) -> PIFuHDArch:
        def level(c):
            return LevelArch(
                num_stack=c.num_stack,
                hg_depth=c.hg_depth,
                hg_dim=c.hg_dim,
                hg_down=c.hg_down,
                mlp_dim=tuple(c.mlp_dim),
                mlp_res_layers=tuple(c.mlp_res_layers),
                merge_layer=c.merge_layer,
                hg_width=c.hg_width,
                groups=c.groups,
            )

        return cls(
            coarse=level(cfg.coarse),
            fine=level(cfg.fine),
            use_front_normal=cfg.use_front_normal,
            use_back_normal=cfg.use_back_normal,
            normal_ngf=cfg.normal_ngf,
            normal_n_down=cfg.normal_n_down,
            normal_n_blocks=cfg.normal_n_blocks,
            coarse_size=cfg.coarse_size,
            fine_size=cfg.fine_size,
            z_size=cfg.z_size,
        )

    def to_config(self) -> ml_collections.ConfigDict:
        d = dataclasses.asdict(self)
        for k in ("coarse", "fine"):
            d[k]["mlp_dim"] = list(d[k]["mlp_dim"])
            d[k]["mlp_res_layers"] = list(d[k]["mlp_res_layers"])
        return ml_collections.ConfigDict(d)


def _filter(level: LevelArch, name: str) -> HGFilter:
    return HGFilter(
        level.num_stack,
        level.hg_depth,
        level.hg_dim,
        level.hg_down,
        level.hg_width,
        level.groups,
        name=name,
    )


def _mlp(level: LevelArch, name: str) -> ImplicitMLP:
    return ImplicitMLP(level.mlp_dim, level.mlp_res_layers, level.merge_layer, name=name)


class CoarseLevel(nn.Module):
    """`HGPIFuNetwNML`: normal nets, coarse filter and coarse MLP."""

    arch: PIFuHDArch

    def setup(self):
        a = self.arch
        gen = dict(out_ch=3, ngf=a.normal_ngf, n_down=a.normal_n_down, n_blocks=a.normal_n_blocks)
        if a.use_front_normal:
            self.netF = GlobalGenerator(**gen)
        if a.use_back_normal:
            self.netB = GlobalGenerator(**gen)
        self.image_filter = _filter(a.coarse, "image_filter")
        self.mlp = _mlp(a.coarse, "mlp")

    def normals(self, image: jnp.ndarray) -> list[jnp.ndarray]:
        """(B, S, S, 3) image in [-1, 1] -> [front, back] normal maps (B, S, S, 3) in [-1, 1]."""
        out = []
        if self.arch.use_front_normal:
            out.append(self.netF(image))
        if self.arch.use_back_normal:
            out.append(self.netB(image))
        return out

    def features(self, image: jnp.ndarray, normals: Sequence[jnp.ndarray]) -> list[jnp.ndarray]:
        """Image (B, S, S, 3) + normal maps -> per-stack features [(B, S/4, S/4, hg_dim)]."""
        x = jnp.concatenate([image, *normals], axis=-1)
        return self.image_filter(x)[0]

    def query(self, feats, points, calib, phi_only: bool = False):
        """Per-stack logits (stack, B, N), the last stack's phi (B, N, 256) and in_bb (B, N)."""
        xyz = orthogonal(points, calib)
        in_bb = jnp.all((xyz >= -1) & (xyz <= 1), axis=-1)
        z_feat = xyz[..., 2:3] * self.arch.z_scale
        logits, phi = [], None
        for feat in feats:
            point_feat = jnp.concatenate(
                [grid_sample_align_corners(feat, xyz[..., :2]), z_feat], -1
            )
            logit, phi = self.mlp(point_feat, phi_only=phi_only)
            if logit is not None:
                logits.append(logit[..., 0])
        return (jnp.stack(logits) if logits else None), phi, in_bb


class PIFuHD(nn.Module):
    """`HGPIFuMRNet`: the fine level, owning the coarse level as `netG`."""

    arch: PIFuHDArch

    def setup(self):
        self.netG = CoarseLevel(self.arch)
        self.image_filter = _filter(self.arch.fine, "image_filter")
        self.mlp = _mlp(self.arch.fine, "mlp")

    def normals(self, image_coarse: jnp.ndarray) -> list[jnp.ndarray]:
        return self.netG.normals(image_coarse)

    def coarse_features(self, image_coarse, normals) -> list[jnp.ndarray]:
        return self.netG.features(image_coarse, normals)

    def fine_features(self, image_fine: jnp.ndarray, normals) -> list[jnp.ndarray]:
        """(B, F, F, 3) image + normal maps at the coarse size -> [(B, F/2, F/2, hg_dim)].

        Normal maps are upsampled to F bilinearly (align_corners=True), as the official code.
        """
        size = (image_fine.shape[1], image_fine.shape[2])
        up = [resize_align_corners(n, size, "bilinear") for n in normals]
        return self.image_filter(jnp.concatenate([image_fine, *up], axis=-1))[0]

    def query(self, coarse_feats, fine_feats, points, calib, calib_fine=None):
        """Occupancy of points for training and analysis.

        Args:
          coarse_feats / fine_feats: per-stack feature maps from the two filters.
          points: (B, N, 3) in the query frame. calib: (B, 4, 4); calib_fine defaults to it.
        Returns dict of
          coarse_logits (Sc, B, N), fine_logits (Sf, B, N) pre-sigmoid per stack,
          phi (B, N, 256), in_bb_coarse / in_bb_fine (B, N) bool,
          occ (B, N) = sigmoid(last fine logit) * in_bb_fine (the official prediction).
        """
        coarse_logits, phi, in_bb_c = self.netG.query(coarse_feats, points, calib)
        calib_fine = calib if calib_fine is None else calib_fine
        fine_logits, in_bb_f = self._fine_logits(fine_feats, points, calib_fine, phi)
        return dict(
            coarse_logits=coarse_logits,
            fine_logits=fine_logits,
            phi=phi,
            in_bb_coarse=in_bb_c,
            in_bb_fine=in_bb_f,
            occ=jax.nn.sigmoid(fine_logits[-1]) * in_bb_f,
        )

    def occupancy(self, coarse_feat, fine_feat, points, calib):
        """Inference: last-stack features (B, h, w, C) -> occupancy (B, N) of points (B, N, 3).

        Skips the coarse MLP layers after phi, which the fine prediction does not use.
        """
        _, phi, _ = self.netG.query([coarse_feat], points, calib, phi_only=True)
        logits, in_bb = self._fine_logits([fine_feat], points, calib, phi)
        return jax.nn.sigmoid(logits[-1]) * in_bb

    def _fine_logits(self, fine_feats, points, calib, phi):
        xyz = orthogonal(points, calib)
        in_bb = jnp.all((xyz[..., :2] >= -1) & (xyz[..., :2] <= 1), axis=-1)
        logits = []
        for feat in fine_feats:
            point_feat = jnp.concatenate([grid_sample_align_corners(feat, xyz[..., :2]), phi], -1)
            logits.append(self.mlp(point_feat)[0][..., 0])
        return jnp.stack(logits), in_bb

    def __call__(self, image_coarse, image_fine, points, calib):
        """Whole forward pass (used for init and training); returns `query`'s dict + normals."""
        normals = self.normals(image_coarse)
        out = self.query(
            self.coarse_features(image_coarse, normals),
            self.fine_features(image_fine, normals),
            points,
            calib,
        )
        out["normals"] = normals
        return out
