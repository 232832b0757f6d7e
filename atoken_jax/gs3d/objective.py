"""The 3D path: voxel features -> Gaussian decoder -> K rendered views -> the decoder's loss.

    L = l1·L1 + lpips·LPIPS(VGG) + ssim·(1 − MS-SSIM)        (spec §2.9: 1, 0.2, 0.2)

computed per view on renders and targets in [0, 1] (LPIPS sees them as 2x − 1, MS-SSIM uses
data_range 1), then averaged over the views whose `view_mask` is set. Renders follow the
release's renderer settings (`RenderSettings`: mip-splatting 2D filter 0.1 with opacity
compensation, black background); padding voxels' Gaussians get opacity 0 and are culled.

MS-SSIM needs the smaller image side > 160 px for its 5 scales. `LossWeights.ssim_scales` < 5
uses the first scales only, weights renormalised to sum to 1 (1 scale = mean SSIM with the
contrast term clamped at 0): that is no longer the standard MS-SSIM, so runs below 161 px say so
in their config (64 px fits 3 scales, 128 px 4).

`gs_loss_from_features` is the whole path as one differentiable function of the Gaussian
decoder's parameters *and* the features, so gradients reach whatever produced the features
(the tokenizer's decoder in joint training, see `task.make_loss_fn`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from atoken_jax import config as config_lib
from atoken_jax import metrics, perceptual
from atoken_jax.gs3d import views as views_lib
from atoken_jax.model import gaussian_decoder as net_lib
from atoken_jax.model.gaussians import Gaussians
from atoken_jax.render import Camera, RenderOutput, rasterize

FULL_SCALES = len(metrics.MS_SSIM_WEIGHTS)


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights of the Gaussian decoder's objective (hashable: part of the jitted step)."""
  l1: float = 1.0
  lpips: float = 0.2
  ssim: float = 0.2
  ssim_scales: int = FULL_SCALES
  lpips_net: str = "vgg"


@dataclasses.dataclass(frozen=True)
class RenderSettings:
  """How training and evaluation render (hashable). Defaults: TRELLIS' GaussianRenderer (2D
  filter 0.1, mip compensation, black background; near 0.2, no far culling in practice)."""
  filter_2d: float = 0.1
  mip: bool = True
  background: tuple[float, float, float] = (0.0, 0.0, 0.0)
  near: float = views_lib.NEAR
  far: float = views_lib.FAR
  max_pairs: int | None = None
  tile_capacity: int | None = None


def ssim_weights(scales: int) -> tuple[float, ...]:
  """The MS-SSIM exponents for `scales` scales: the standard five, or the first `scales`
  renormalised to sum to one."""
  if not 1 <= scales <= FULL_SCALES:
    raise ValueError(f"ssim_scales must be in 1..{FULL_SCALES}, got {scales}")
  if scales == FULL_SCALES:
    return tuple(metrics.MS_SSIM_WEIGHTS)
  w = metrics.MS_SSIM_WEIGHTS[:scales]
  return tuple(float(x) / sum(w) for x in w)


def min_image_side(scales: int) -> int:
  """Smallest square image side that `scales` MS-SSIM scales accept (161 for five)."""
  return 10 * 2 ** (scales - 1) + 1


def view_terms(pred: jax.Array, target: jax.Array, lpips_params, weights: LossWeights
               ) -> dict[str, jax.Array]:
  """Per-view terms. pred, target [..., H, W, 3] in [0, 1] -> {"l1", "lpips", "ms_ssim"} [...]."""
  lead, hw = pred.shape[:-3], pred.shape[-3:]
  pred = pred.reshape((-1,) + hw).astype(jnp.float32)
  target = target.reshape((-1,) + hw).astype(jnp.float32)
  out = {"l1": jnp.mean(jnp.abs(pred - target), axis=(1, 2, 3))}
  if weights.lpips:
    out["lpips"] = perceptual.LPIPS(weights.lpips_net).apply(
        {"params": lpips_params}, pred * 2.0 - 1.0, target * 2.0 - 1.0)
  if weights.ssim:
    out["ms_ssim"] = metrics.ms_ssim(pred, target, data_range=1.0,
                                     weights=ssim_weights(weights.ssim_scales))
  return {k: v.reshape(lead) for k, v in out.items()}


def gs_loss(pred: jax.Array, target: jax.Array, view_mask: jax.Array, lpips_params,
            weights: LossWeights) -> tuple[jax.Array, dict[str, jax.Array]]:
  """pred, target [B, K, H, W, 3] in [0, 1], view_mask [B, K] -> (loss, metrics).

  Each term is the mean over the masked views (0 when no view is set); the metrics hold the
  terms, `loss` and `views` (the count).
  """
  terms = view_terms(pred, target, lpips_params, weights)
  mask = view_mask.astype(jnp.float32)
  count = mask.sum()
  mean = lambda v: jnp.sum(v * mask) / jnp.maximum(count, 1.0)
  out = {k: mean(v) for k, v in terms.items()}
  loss = weights.l1 * out["l1"]
  if weights.lpips:
    loss = loss + weights.lpips * out["lpips"]
  if weights.ssim:
    loss = loss + weights.ssim * (1.0 - out["ms_ssim"])
  out.update(loss=loss, views=count)
  return loss, out


def decode_gaussians(cfg: config_lib.GaussianDecoderConfig, variables: Mapping[str, Any],
                     feats: jax.Array, coords: jax.Array, valid: jax.Array,
                     layout: Mapping[str, Any] | None = None, remat: bool = False
                     ) -> tuple[Gaussians, jax.Array]:
  """feats [B, N, 768] in [-1, 1], coords [B, N, 3] int, valid [B, N] -> (Gaussians [B, N·G],
  valid [B, N·G]).

  variables: {"params", "constants"} of `GaussianDecoderNet(cfg)`. layout: per-asset
  `window_layout(coords[b:b+1], valid[b:b+1], cfg)` stacked on a leading [B] axis (packed
  attention, O(N) work); None = the masked O(N²) path.
  """
  net = net_lib.GaussianDecoderNet(cfg, remat=remat)
  if layout is None:
    g = net.apply(dict(variables), feats, coords, valid, method=net_lib.GaussianDecoderNet.decode)
  else:
    one = lambda f, c, v, lay: jax.tree.map(lambda x: x[0], net.apply(
        dict(variables), f[None], c[None], v[None], layout=lay,
        method=net_lib.GaussianDecoderNet.decode))
    g = jax.vmap(one)(feats, coords, valid, layout)
  return g, jnp.repeat(valid, cfg.num_gaussians, axis=-1)


def render_gaussians(g: Gaussians, cams: Camera, valid: jax.Array | None = None,
                     settings: RenderSettings = RenderSettings()) -> RenderOutput:
  """One asset's Gaussians [M, ...] seen by a stack of cameras [K] -> RenderOutput [K, ...].

  valid [M] (optional): Gaussians to keep; the others get opacity 0 (culled).
  """
  opacity = g.opacity if valid is None else jnp.where(valid, g.opacity, 0.0)
  colors = g.sh_dc[:, None, :]  # SH degree 0: colour = max(0.2820948·dc + 0.5, 0)
  one = lambda cam: rasterize(g.xyz, g.scale, g.rotation, opacity, colors, cam,
                              background=settings.background, filter_2d=settings.filter_2d,
                              mip=settings.mip, max_pairs=settings.max_pairs,
                              tile_capacity=settings.tile_capacity)
  return jax.vmap(one)(cams)


def render_batch(g: Gaussians, valid: jax.Array, cams: Camera,
                 settings: RenderSettings = RenderSettings()) -> RenderOutput:
  """Gaussians [B, M, ...], valid [B, M], cameras with [B, K] fields -> RenderOutput [B, K, ...]."""
  return jax.vmap(lambda gb, vb, cb: render_gaussians(gb, cb, vb, settings))(g, valid, cams)


VIEW_KEYS = ("images", "view_mask", "w2c", "fx", "fy", "cx", "cy")


def gs_loss_from_features(gs_params, frozen: Mapping[str, Any], feats: jax.Array,
                          coords: jax.Array, valid: jax.Array, batch: Mapping[str, jax.Array],
                          cfg: config_lib.GaussianDecoderConfig, weights: LossWeights,
                          settings: RenderSettings = RenderSettings(), remat: bool = False
                          ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The Gaussian-decoder objective of a batch of B assets.

  Args:
    gs_params: the decoder's "params"; frozen: {"gs_constants": its "constants" collection,
      "lpips": LPIPS parameters (unused when weights.lpips == 0)};
    feats [B, N, 768] voxel features in [-1, 1]; coords [B, N, 3]; valid [B, N];
    batch: images [B, K, H, W, 3] in [0, 1], view_mask [B, K], the cameras' w2c [B, K, 4, 4] and
      fx, fy, cx, cy [B, K] (`views.camera_arrays`), and optionally the packed-attention layout
      (`flatten_layout`; see `decode_gaussians`);
  Returns (loss, metrics) as `gs_loss`, plus the renders' `overflow` and `lossy_tiles` (max over
  views: if non-zero, raise RenderSettings.max_pairs).
  """
  variables = {"params": gs_params, "constants": frozen["gs_constants"]}
  g, g_valid = decode_gaussians(cfg, variables, feats, coords, valid, unflatten_layout(batch),
                                remat)
  size = batch["images"].shape[-2]
  cams = views_lib.camera_from_arrays(batch, size, settings.near, settings.far)
  out = render_batch(g, g_valid, cams, settings)
  loss, m = gs_loss(out.rgb, batch["images"], batch["view_mask"], frozen.get("lpips"), weights)
  m.update(overflow=jnp.max(out.overflow).astype(jnp.float32),
           lossy_tiles=jnp.max(out.lossy_tiles).astype(jnp.float32),
           opacity=jnp.sum(g.opacity * g_valid) / jnp.maximum(g_valid.sum(), 1))
  return loss, m


LAYOUT_KEYS = ("index", "window", "inverse")


def flatten_layout(layout: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  """{"even"|"odd": {"index", "window", "inverse"}} -> flat batch keys "layout_<parity>_<key>"
  (the step shards every batch entry on its leading axis, so the batch stays flat)."""
  return {f"layout_{p}_{k}": v for p, d in layout.items() for k, v in d.items()}


def unflatten_layout(batch: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
  """Inverse of `flatten_layout` on a batch; None when the batch has no layout."""
  if "layout_even_index" not in batch:
    return None
  return {p: {k: batch[f"layout_{p}_{k}"] for k in LAYOUT_KEYS} for p in net_lib.PARITIES}
