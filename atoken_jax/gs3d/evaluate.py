"""3D reconstruction metrics: PSNR, SSIM and LPIPS over rendered views (paper Table 8 protocol).

For each asset: voxel features (ground truth, or a tokenizer's reconstruction of them) ->
Gaussian decoder -> one render per stored view (camera and size of the stored view unless
`size` says otherwise) -> per-view metrics against the stored view. Renders are clipped to
[0, 1] and, with `quantize` (default), rounded to the uint8 grid, as the saved PNGs that
published evaluations measure. Metrics on [0, 1] images: PSNR and SSIM with data_range 1
(`atoken_jax.metrics`: skimage's Gaussian-window SSIM), LPIPS on 2x − 1 (VGG by default; the
paper does not say which trunk). Reported means are over all rendered views of all assets
("averaged over rendered views"); per-asset means are kept too.

  gdec = GaussianDecoder.from_ml_atoken("3d_decode_gs.safetensors")
  report = evaluate_sources(gdec, ["arrayrecord:/data/toys4k"], lpips_params=p, size=512)
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax import metrics, perceptual
from atoken_jax.gs3d import objective
from atoken_jax.gs3d import views as views_lib
from atoken_jax.model.gaussians import Gaussians


def prepare_renders(renders, quantize: bool = True) -> np.ndarray:
  """Renders [..., H, W, 3] -> clipped to [0, 1], rounded to k/255 when `quantize`."""
  r = np.clip(np.asarray(renders, np.float32), 0.0, 1.0)
  return np.round(r * 255.0) / np.float32(255.0) if quantize else r


@functools.lru_cache(maxsize=None)
def _metrics_fn(lpips_net: str | None):
  lp = perceptual.LPIPS(lpips_net) if lpips_net else None

  def fn(lpips_params, pred, target):
    out = {"psnr": metrics.psnr(pred, target, data_range=1.0),
           "ssim": metrics.ssim(pred, target, data_range=1.0)}
    if lp is not None:
      out["lpips"] = lp.apply({"params": lpips_params}, pred * 2.0 - 1.0, target * 2.0 - 1.0)
    return out
  return jax.jit(fn)


def view_metrics(renders, targets, lpips_params=None, lpips_net: str = "vgg",
                 quantize: bool = True) -> dict[str, np.ndarray]:
  """renders, targets [V, H, W, 3] in [0, 1] -> {"psnr", "ssim"[, "lpips"]}: [V] float64 each
  (LPIPS only with `lpips_params`)."""
  pred = prepare_renders(renders, quantize)
  target = np.asarray(targets, np.float32)
  out = _metrics_fn(lpips_net if lpips_params is not None else None)(lpips_params, pred, target)
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def _render_fn(settings: objective.RenderSettings):
  return jax.jit(lambda g, cams: objective.render_gaussians(g, cams, None, settings).rgb)


def render_views(g: Gaussians, cams,
                 settings: objective.RenderSettings = objective.RenderSettings(),
                 chunk: int = 4) -> np.ndarray:
  """One asset's Gaussians [M, ...] through a camera stack [V] -> rgb [V, H, W, 3] (numpy),
  `chunk` views per compiled call (the last chunk is padded, so one compile serves all)."""
  n = cams.num_views
  out = []
  for start in range(0, n, chunk):
    idx = np.minimum(np.arange(start, start + chunk), n - 1)
    sub = jax.tree.map(lambda x: x[idx] if jnp.ndim(x) else x, cams)
    out.append(np.asarray(_render_fn(settings)(g, sub))[:min(chunk, n - start)])
  return np.concatenate(out)


def decoder_input(asset, tokenizer=None, posterior: str = "mean", seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
  """-> (feats [N, 768] in [-1, 1], coords [N, 3]): the asset's ground-truth voxel features, or
  with a `Tokenizer` its reconstruction of them (encode -> decode -> `Reconstruction.pixels`)."""
  feats, coords = views_lib.ground_truth_voxels(asset)
  if tokenizer is None:
    return feats, coords
  from atoken_jax.tokens import Voxels  # pylint: disable=import-outside-toplevel
  enc = tokenizer.encode([Voxels(coords=coords, feats=(feats + 1) / 2)], posterior=posterior,
                         seed=seed)
  rec = tokenizer.decode(enc).pixels(0)
  return np.asarray(rec.feats, np.float32) * 2 - 1, np.asarray(rec.coords, np.int32)


def evaluate_asset(gdec, asset, *, tokenizer=None, size: int | None = None,
                   view_ids: Sequence[int] | None = None,
                   settings: objective.RenderSettings = objective.RenderSettings(),
                   lpips_params=None, lpips_net: str = "vgg", quantize: bool = True,
                   keep_renders: bool = False, posterior: str = "mean") -> dict[str, Any]:
  """One asset -> {"psnr", "ssim"[, "lpips"]: mean over its views; "per_view": {metric: [V]};
  "views": V; "renders" [V, S, S, 3] (unquantised, only with keep_renders)}.

  gdec: a `GaussianDecoder` (user class); tokenizer: optional `Tokenizer` for its
  reconstruction of the voxel features; size: render / compare size (default: stored size).
  """
  feats, coords = decoder_input(asset, tokenizer, posterior)
  g = gdec(feats, coords)
  size = int(size or asset.views.shape[1])
  ids = np.arange(len(asset.views)) if view_ids is None else np.asarray(view_ids)
  cams = views_lib.cameras_from_asset(asset, size, ids, settings.near, settings.far)
  renders = render_views(g, cams, settings)
  targets = views_lib.target_images(asset.views[ids], size)
  per_view = view_metrics(renders, targets, lpips_params, lpips_net, quantize)
  out = {k: float(np.mean(v)) for k, v in per_view.items()}
  out.update(per_view={k: v.tolist() for k, v in per_view.items()}, views=len(ids))
  if keep_renders:
    out["renders"] = renders
  return out


def summarize(per_asset: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Means over all views of all assets (each view counts once) and over assets."""
  keys = [k for k in ("psnr", "ssim", "lpips") if per_asset and k in per_asset[0]]
  out: dict[str, Any] = {"assets": len(per_asset),
                         "views": int(sum(a["views"] for a in per_asset))}
  for k in keys:
    out[k] = float(np.mean(np.concatenate([a["per_view"][k] for a in per_asset])))
    out[f"{k}_asset_mean"] = float(np.mean([a[k] for a in per_asset]))
  return out


def iter_assets(sources: Sequence[str], num_views: int = 16, max_assets: int = 0
                ) -> Iterable[tuple[str, Any]]:
  """(name, VoxelAsset) of each usable "voxels" record in data-pipeline source specs, in order
  (records without cameras or unreadable ones are skipped)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from data_pipelines import decode, sources as sources_lib  # pylint: disable=import-outside-toplevel
  spec = ml_collections.ConfigDict(dict(sources=tuple(sources), modalities=("voxels",),
                                        name="gs3d-eval", tfds=ml_collections.ConfigDict()))
  count = 0
  for part in sources_lib.resolve_parts(spec):
    for i in range(len(part)):
      _, _, raw = part.dataset[i]
      try:
        asset = views_lib.asset_from_record(raw, num_views, seed=i)
      except (decode.BadData, ValueError):
        continue
      yield f"{part.description}#{i}", asset
      count += 1
      if max_assets and count >= max_assets:
        return


def evaluate_sources(gdec, sources: Sequence[str], *, max_assets: int = 0, num_views: int = 16,
                     **kw) -> dict[str, Any]:
  """`evaluate_asset` over every asset of the sources -> `summarize(...)` + "per_asset"."""
  per_asset = []
  for name, asset in iter_assets(sources, num_views, max_assets):
    res = evaluate_asset(gdec, asset, **kw)
    res.pop("renders", None)
    per_asset.append({"name": name, **res})
  if not per_asset:
    raise ValueError(f"no usable 3D asset in {tuple(sources)}")
  return {**summarize(per_asset), "per_asset": per_asset}
