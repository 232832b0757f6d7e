"""Front-to-back alpha compositing of tiles, with a hand-written backward pass.

For each pixel p and its tile's Gaussians i = 0..K−1 (nearest first):
  v_i = o_i·exp(−σ_i),  σ_i = ½ dᵀ Q_i d,  d = p − μ_i,  Q_i = [[a, b], [b, c]]
  α_i = min(0.999, v_i) if v_i ≥ 1/255 else 0 (skipped)
  T_i = Π_{j<i} (1 − α_j); Gaussian i ends the pixel, uncomposited, if T_i(1 − α_i) ≤ 1e-4
  out_p = Σ_i w_i f_i with w_i = α_i T_i over the composited ones; T_final = Π (1 − α_i).
Features f_i [F] carry colour and depth, so one formula serves every channel.

The backward pass is a second forward sweep: with S = Σ_F G_F·out_F known from the saved output,
the weight still to come after Gaussian i is S − Σ_{k≤i} w_k g_k, so nothing per-step is stored.
Tiles run in batches of B (`lax.map`), Gaussians in blocks of L (`lax.scan`); a block is skipped
(`lax.cond`) when no tile of the batch has Gaussians there or every pixel is finished.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANSMITTANCE_MIN = 1e-4


def _block_alpha(pixels, means2d, conics, opacities):
  """α and its pieces for a block of L Gaussians over B tiles of P pixels.

  pixels [B, P, 2]; means2d [L, B, 2]; conics [L, B, 3]; opacities [L, B].
  Returns a dict of [L, B, P] arrays.
  """
  dx = pixels[None, :, :, 0] - means2d[:, :, None, 0]
  dy = pixels[None, :, :, 1] - means2d[:, :, None, 1]
  a, b, c = (conics[:, :, k, None] for k in range(3))
  sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
  falloff = jnp.exp(-sigma)
  value = opacities[:, :, None] * falloff
  kept = value >= ALPHA_MIN
  alpha = jnp.where(kept, jnp.minimum(value, ALPHA_MAX), 0.0).astype(value.dtype)
  return dict(dx=dx, dy=dy, falloff=falloff, value=value, kept=kept, alpha=alpha)


def _running(op, values):
  """Inclusive prefix reduction along axis 0 of [L, ...], as L unrolled element-wise steps.

  XLA on CPU runs this several times faster than `jnp.cumprod` / `associative_scan`; L (the
  block size) is small, so the unrolled program stays small. The barrier stops XLA from fusing
  the whole chain into every consumer (which would redo it per use, O(L²) work).
  """
  totals = [values[0]]
  for step in range(1, values.shape[0]):
    totals.append(op(totals[-1], values[step]))
  return jax.lax.optimization_barrier(jnp.stack(totals))


def _block_weights(alpha, transmittance, done):
  """Compositing weights for a block. alpha [L, B, P]; transmittance, done [B, P].

  Returns (weights [L, B, P], live [L, B, P], T before each Gaussian [L, B, P], new T, new done).
  """
  one_minus = 1.0 - alpha
  inclusive = transmittance[None] * _running(jnp.multiply, one_minus)
  exclusive = jnp.concatenate([transmittance[None], inclusive[:-1]], axis=0)
  live = (inclusive > TRANSMITTANCE_MIN) & ~done[None]
  weights = jnp.where(live, alpha * exclusive, 0.0)
  new_transmittance = transmittance * jnp.prod(jnp.where(live, one_minus, 1.0), axis=0)
  new_done = done | (inclusive[-1] <= TRANSMITTANCE_MIN)
  return weights, live, exclusive, new_transmittance, new_done


def _tile_pixels(origins, tile_size, dtype):
  """Pixel centres [B, P, 2] (x, y) of tiles whose top-left pixel corners are origins [B, 2]."""
  local = jnp.arange(tile_size, dtype=dtype) + 0.5
  grid_y, grid_x = jnp.meshgrid(local, local, indexing="ij")
  offsets = jnp.stack([grid_x.ravel(), grid_y.ravel()], axis=-1)
  return origins[:, None, :].astype(dtype) + offsets[None]


def _blocks(array, block_size):
  """[B, K, ...] → [K / L, L, B, ...] for scanning over blocks of L Gaussians."""
  batch, capacity = array.shape[:2]
  split = array.reshape((batch, capacity // block_size, block_size) + array.shape[2:])
  return jnp.moveaxis(split, 0, 2)


def _unblocks(array):
  """Inverse of `_blocks`."""
  array = jnp.moveaxis(array, 2, 0)
  return array.reshape((array.shape[0], -1) + array.shape[3:])


def _batch_forward(batch, tile_size, block_size):
  """Composite one batch of B tiles.

  Returns (out [B, P, F], transmittance [B, P], ended [B, P] 1.0 where the transmittance cut-off
  ended the pixel).
  """
  means2d, conics, opacities, features, counts, origins = batch
  dtype = means2d.dtype
  pixels = _tile_pixels(origins, tile_size, dtype)
  num_pixels, num_features = pixels.shape[1], features.shape[-1]
  xs = tuple(_blocks(x, block_size) for x in (means2d, conics, opacities, features))
  block_starts = jnp.arange(len(xs[0]), dtype=jnp.int32) * block_size

  def step(carry, inputs):
    start, block = inputs[0], inputs[1:]

    def run(carry):
      transmittance, done, out = carry
      block_means, block_conics, block_opacities, block_features = block
      pieces = _block_alpha(pixels, block_means, block_conics, block_opacities)
      alpha = jax.lax.optimization_barrier(pieces["alpha"])  # computed once, used many times
      weights, _, _, transmittance, done = _block_weights(alpha, transmittance, done)
      out = out + jnp.einsum("lbp,lbf->bpf", weights, block_features)
      return transmittance, done, out

    active = jnp.any(counts > start) & ~jnp.all(carry[1])
    return jax.lax.cond(active, run, lambda c: c, carry), None

  init = (jnp.ones((len(origins), num_pixels), dtype), jnp.zeros((len(origins), num_pixels), bool),
          jnp.zeros((len(origins), num_pixels, num_features), dtype))
  (transmittance, done, out), _ = jax.lax.scan(step, init, (block_starts,) + xs)
  return out, transmittance, done.astype(dtype)


def _batch_backward(batch, outputs, cotangents, tile_size, block_size):
  """Gradients for one batch w.r.t. means2d, conics, opacities, features ([B, K, ...] each)."""
  means2d, conics, opacities, features, counts, origins = batch
  out, final_transmittance, _ = outputs
  grad_out, grad_transmittance, _ = cotangents
  dtype = means2d.dtype
  pixels = _tile_pixels(origins, tile_size, dtype)
  num_pixels = pixels.shape[1]
  xs = tuple(_blocks(x, block_size) for x in (means2d, conics, opacities, features))
  block_starts = jnp.arange(len(xs[0]), dtype=jnp.int32) * block_size
  total_weighted = jnp.sum(grad_out * out, axis=-1)  # S = Σ_i w_i g_i per pixel
  tail_transmittance = grad_transmittance * final_transmittance

  def step(carry, inputs):
    start, block = inputs[0], inputs[1:]
    block_means, block_conics, block_opacities, block_features = block

    def run(carry):
      transmittance, done, weighted_so_far = carry
      pieces = jax.lax.optimization_barrier(
          _block_alpha(pixels, block_means, block_conics, block_opacities))
      alpha = pieces["alpha"]
      weights, live, before, transmittance, done = _block_weights(alpha, transmittance, done)
      grad_weight = jnp.einsum("bpf,lbf->lbp", grad_out, block_features)
      weighted = weights * grad_weight
      weighted_through = weighted_so_far[None] + _running(jnp.add, weighted)
      remaining = total_weighted[None] - weighted_through
      grad_alpha = jnp.where(
          live, before * grad_weight - (remaining + tail_transmittance[None]) / (1 - alpha), 0.0)
      grad_value = jnp.where(pieces["kept"] & (pieces["value"] < ALPHA_MAX), grad_alpha, 0.0)
      grad_sigma = -grad_value * pieces["value"]
      dx, dy = pieces["dx"], pieces["dy"]
      a, b, c = (block_conics[:, :, k, None] for k in range(3))  # [L, B, 1]
      grads = (
          jnp.stack([jnp.sum(-grad_sigma * (a * dx + b * dy), axis=-1),
                     jnp.sum(-grad_sigma * (b * dx + c * dy), axis=-1)], axis=-1),
          jnp.stack([jnp.sum(grad_sigma * 0.5 * dx * dx, axis=-1),
                     jnp.sum(grad_sigma * dx * dy, axis=-1),
                     jnp.sum(grad_sigma * 0.5 * dy * dy, axis=-1)], axis=-1),
          jnp.sum(grad_value * pieces["falloff"], axis=-1),
          jnp.einsum("lbp,bpf->lbf", weights, grad_out),
      )
      return (transmittance, done, weighted_through[-1]), grads

    def skip(carry):
      return carry, tuple(jnp.zeros_like(x) for x in block)

    active = jnp.any(counts > start) & ~jnp.all(carry[1])
    return jax.lax.cond(active, run, skip, carry)

  init = (jnp.ones((len(origins), num_pixels), dtype), jnp.zeros((len(origins), num_pixels), bool),
          jnp.zeros((len(origins), num_pixels), dtype))
  _, grads = jax.lax.scan(step, init, (block_starts,) + xs)
  return tuple(_unblocks(g) for g in grads)


@functools.lru_cache(maxsize=None)
def _compositor(tile_size: int, block_size: int):
  """A custom-VJP compositor over batched tiles for fixed static sizes."""

  @jax.custom_vjp
  def composite(means2d, conics, opacities, features, counts, origins):
    return _forward(means2d, conics, opacities, features, counts, origins)

  def _forward(*batched):
    return jax.lax.map(lambda b: _batch_forward(b, tile_size, block_size), batched)

  def forward(*batched):
    outputs = _forward(*batched)
    return outputs, (batched, outputs)

  def backward(residuals, cotangents):
    batched, outputs = residuals
    grads = jax.lax.map(
        lambda args: _batch_backward(args[0], args[1], args[2], tile_size, block_size),
        (batched, outputs, cotangents))
    return grads + (None, None)

  composite.defvjp(forward, backward)
  return composite


def composite_tiles(means2d, conics, opacities, features, counts, origins, *, tile_size: int,
                    tiles_per_batch: int, block_size: int):
  """Composite T tiles of K Gaussians each.

  means2d [T, K, 2]; conics [T, K, 3]; opacities [T, K] (0 for unused slots); features
  [T, K, F]; counts [T] int32 slots in use (a hint for skipping; may exceed K); origins [T, 2]
  top-left pixel corner (x, y) of each tile. Returns (out [T, tile², F], transmittance
  [T, tile²], ended [T, tile²] 1.0 where the cut-off ended the pixel, no gradient) with pixels
  in row-major order inside each tile.
  """
  num_tiles, capacity = opacities.shape
  block_size = min(block_size, capacity)
  padded_capacity = -(-capacity // block_size) * block_size
  tiles_per_batch = min(tiles_per_batch, num_tiles)
  padded_tiles = -(-num_tiles // tiles_per_batch) * tiles_per_batch

  # Batch tiles of similar load together so that empty blocks can be skipped. Padding tiles
  # repeat tile 0 with zero opacity and zero count: they add nothing and receive nothing.
  tile_order = jnp.argsort(counts)
  tile_order = jnp.concatenate([tile_order, jnp.zeros(padded_tiles - num_tiles, tile_order.dtype)])
  is_real_tile = jnp.arange(padded_tiles) < num_tiles
  pad_slots = padded_capacity - capacity

  def arrange(x, pad_slots=0):
    return _batched(x[tile_order], tiles_per_batch, pad_slots)

  opacities = jnp.where(is_real_tile[:, None], opacities[tile_order], 0.0)
  counts = jnp.where(is_real_tile, counts[tile_order], 0)
  batched = (arrange(means2d, pad_slots), arrange(conics, pad_slots),
             _batched(opacities, tiles_per_batch, pad_slots), arrange(features, pad_slots),
             _batched(counts, tiles_per_batch), arrange(origins))
  outputs = _compositor(tile_size, block_size)(*batched)
  inverse = jnp.argsort(tile_order[:num_tiles])
  return tuple(x.reshape((padded_tiles,) + x.shape[2:])[inverse] for x in outputs)


def _batched(x, tiles_per_batch, pad_slots=0):
  """[T', ...] already in batch order → [T' / B, B, ...], padding axis 1 by `pad_slots`."""
  if pad_slots:
    x = jnp.pad(x, [(0, 0), (0, pad_slots)] + [(0, 0)] * (x.ndim - 2))
  return x.reshape((x.shape[0] // tiles_per_batch, tiles_per_batch) + x.shape[1:])
