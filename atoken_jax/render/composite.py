"""Front-to-back alpha compositing of tiles, with a hand-written backward pass.

For each pixel p and its tile's Gaussians i = 0, 1, ... (nearest first):
  v_i = o_i·exp(−σ_i),  σ_i = ½ dᵀ Q_i d,  d = p − μ_i,  Q_i = [[a, b], [b, c]]
  α_i = min(0.999, v_i) if v_i ≥ 1/255 else 0 (skipped)
  T_i = Π_{j<i} (1 − α_j); Gaussian i ends the pixel, uncomposited, if T_i(1 − α_i) ≤ 1e-4
  out_p = Σ_i w_i f_i with w_i = α_i T_i over the composited ones; T_final = Π (1 − α_i).
Features f_i [F] carry colour and depth, so one formula serves every channel.

Work layout: tiles are sorted by load and processed B at a time; each batch walks its tiles'
runs of the pair list in blocks of L Gaussians with a `lax.while_loop` that stops at the
batch's longest run or once every pixel is finished, so the cost follows the real load and
no [tiles, capacity] array exists. The backward pass is a second forward sweep: with
S = Σ_F G_F·out_F known from the saved output, the weight still to come after Gaussian i is
S − Σ_{k≤i} w_k g_k, so nothing per step is stored; per-Gaussian gradients are scatter-added.
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


def _split(table, num_features):
  """[..., 6 + F] Gaussian rows → (means2d, conics, opacities, features)."""
  return table[..., 0:2], table[..., 2:5], table[..., 5], table[..., 6:6 + num_features]


class _Batch:
  """Static description of one batch of B tiles: where their runs live and their pixels."""

  def __init__(self, tiles, layout, tile_size, block_size, dtype):
    pair_ids, starts, counts, origins = layout
    self.starts, self.counts = starts[tiles], counts[tiles]
    self.pixels = _tile_pixels(origins[tiles], tile_size, dtype)
    self.pair_ids = pair_ids
    self.lanes = jnp.arange(block_size, dtype=jnp.int32)
    self.longest = jnp.max(self.counts)

  def gaussians(self, start):
    """Gaussian indices [L, B] of lanes start..start+L of each tile's run, and validity."""
    offsets = start + self.lanes[:, None]
    valid = offsets < self.counts[None, :]
    slots = jnp.clip(self.starts[None, :] + offsets, 0, self.pair_ids.shape[0] - 1)
    return jnp.where(valid, self.pair_ids[slots], 0), valid


def _batch_forward(table, num_features, batch: _Batch):
  """Composite one batch. Returns (out [B, P, F], transmittance [B, P], ended [B, P])."""
  dtype = table.dtype
  shape = batch.pixels.shape[:2]

  def keep_going(state):
    start, _, done, _ = state
    return (start < batch.longest) & ~jnp.all(done)

  def step(state):
    start, transmittance, done, out = state
    ids, valid = batch.gaussians(start)
    means2d, conics, opacities, features = _split(table[ids], num_features)
    opacities = jnp.where(valid, opacities, 0.0)
    alpha = jax.lax.optimization_barrier(
        _block_alpha(batch.pixels, means2d, conics, opacities)["alpha"])
    weights, _, _, transmittance, done = _block_weights(alpha, transmittance, done)
    out = out + jnp.einsum("lbp,lbf->bpf", weights, features)
    return start + batch.lanes.shape[0], transmittance, done, out

  init = (jnp.int32(0), jnp.ones(shape, dtype), jnp.zeros(shape, bool),
          jnp.zeros(shape + (num_features,), dtype))
  _, transmittance, done, out = jax.lax.while_loop(keep_going, step, init)
  return out, transmittance, done.astype(dtype)


def _batch_backward(table, num_features, batch: _Batch, outputs, cotangents, grad_table):
  """Adds this batch's contribution to d loss / d table ([N, 6 + F]) and returns it."""
  out, final_transmittance, _ = outputs
  grad_out, grad_transmittance, _ = cotangents
  dtype = table.dtype
  shape = batch.pixels.shape[:2]
  total_weighted = jnp.sum(grad_out * out, axis=-1)  # S = Σ_i w_i g_i per pixel
  tail_transmittance = grad_transmittance * final_transmittance

  def keep_going(state):
    start, _, done, _, _ = state
    return (start < batch.longest) & ~jnp.all(done)

  def step(state):
    start, transmittance, done, weighted_so_far, grad_table = state
    ids, valid = batch.gaussians(start)
    means2d, conics, opacities, features = _split(table[ids], num_features)
    opacities = jnp.where(valid, opacities, 0.0)
    pieces = jax.lax.optimization_barrier(_block_alpha(batch.pixels, means2d, conics, opacities))
    alpha = pieces["alpha"]
    weights, live, before, transmittance, done = _block_weights(alpha, transmittance, done)
    grad_weight = jnp.einsum("bpf,lbf->lbp", grad_out, features)
    weighted_through = weighted_so_far[None] + _running(jnp.add, weights * grad_weight)
    remaining = total_weighted[None] - weighted_through
    grad_alpha = jnp.where(
        live, before * grad_weight - (remaining + tail_transmittance[None]) / (1 - alpha), 0.0)
    grad_value = jnp.where(pieces["kept"] & (pieces["value"] < ALPHA_MAX), grad_alpha, 0.0)
    grad_sigma = -grad_value * pieces["value"]
    dx, dy = pieces["dx"], pieces["dy"]
    a, b, c = (conics[:, :, k, None] for k in range(3))  # [L, B, 1]
    grad_rows = jnp.concatenate([
        jnp.sum(-grad_sigma * (a * dx + b * dy), axis=-1)[..., None],
        jnp.sum(-grad_sigma * (b * dx + c * dy), axis=-1)[..., None],
        jnp.sum(grad_sigma * 0.5 * dx * dx, axis=-1)[..., None],
        jnp.sum(grad_sigma * dx * dy, axis=-1)[..., None],
        jnp.sum(grad_sigma * 0.5 * dy * dy, axis=-1)[..., None],
        jnp.sum(grad_value * pieces["falloff"], axis=-1)[..., None],
        jnp.einsum("lbp,bpf->lbf", weights, grad_out),
    ], axis=-1)
    grad_rows = jnp.where(valid[..., None], grad_rows, 0.0)
    grad_table = grad_table.at[ids.reshape(-1)].add(grad_rows.reshape(-1, grad_rows.shape[-1]))
    return (start + batch.lanes.shape[0], transmittance, done, weighted_through[-1], grad_table)

  init = (jnp.int32(0), jnp.ones(shape, dtype), jnp.zeros(shape, bool), jnp.zeros(shape, dtype),
          grad_table)
  return jax.lax.while_loop(keep_going, step, init)[-1]


def _batches(counts, tiles_per_batch):
  """Tile indices [T' / B, B], sorted by load so each batch has similar work, padded with -1."""
  num_tiles = counts.shape[0]
  padded = -(-num_tiles // tiles_per_batch) * tiles_per_batch
  order = jnp.argsort(counts).astype(jnp.int32)
  order = jnp.concatenate([order, jnp.full(padded - num_tiles, -1, jnp.int32)])
  return order.reshape(-1, tiles_per_batch)


@functools.lru_cache(maxsize=None)
def _compositor(num_features: int, tile_size: int, tiles_per_batch: int, block_size: int):
  """A custom-VJP compositor for fixed static sizes."""

  def with_padding_tile(layout):
    """Append an empty tile that padding entries (index -1) of `_batches` point to."""
    pair_ids, starts, counts, origins = layout
    return (pair_ids, jnp.append(starts, 0), jnp.append(counts, 0),
            jnp.concatenate([origins, origins[:1]]))

  def forward_all(table, layout):
    batches = _batches(layout[2], tiles_per_batch)
    padded = with_padding_tile(layout)
    results = jax.lax.map(
        lambda tiles: _batch_forward(
            table, num_features, _Batch(tiles, padded, tile_size, block_size, table.dtype)),
        batches)
    # Back to tile order: padding entries (-1) sort first, then tiles 0, 1, ...
    inverse = jnp.argsort(batches.reshape(-1))[-layout[2].shape[0]:]
    return tuple(r.reshape((-1,) + r.shape[2:])[inverse] for r in results)

  @jax.custom_vjp
  def composite(table, layout):
    return forward_all(table, layout)

  def forward(table, layout):
    outputs = forward_all(table, layout)
    return outputs, (table, layout, outputs)

  def backward(residuals, cotangents):
    table, layout, outputs = residuals
    batches = _batches(layout[2], tiles_per_batch)
    padded = with_padding_tile(layout)
    pad = lambda x: jnp.concatenate([x, jnp.zeros_like(x[:1])])

    def one_batch(grad_table, tiles):
      batch = _Batch(tiles, padded, tile_size, block_size, table.dtype)
      picked = lambda values: tuple(pad(v)[tiles] for v in values)
      return _batch_backward(table, num_features, batch, picked(outputs), picked(cotangents),
                             grad_table), None

    grad_table, _ = jax.lax.scan(one_batch, jnp.zeros_like(table), batches)
    return grad_table, jax.tree.map(lambda _: None, layout)

  composite.defvjp(forward, backward)
  return composite


def composite_tiles(means2d, conics, opacities, features, pair_ids, starts, counts, origins, *,
                    tile_size: int, tiles_per_batch: int, block_size: int):
  """Composite T tiles from per-Gaussian arrays and the tile runs of a pair list.

  means2d [N, 2]; conics [N, 3]; opacities [N]; features [N, F]; pair_ids [P] int32; tile t
  composites pair_ids[starts[t] : starts[t] + counts[t]] (nearest first); origins [T, 2]
  top-left pixel corner (x, y) of each tile. Returns (out [T, tile², F], transmittance
  [T, tile²], ended [T, tile²] 1.0 where the cut-off ended the pixel, no gradient), pixels in
  row-major order inside each tile.
  """
  table = jnp.concatenate([means2d, conics, opacities[:, None], features], axis=-1)
  layout = (pair_ids, starts, counts, origins)
  tiles_per_batch = min(tiles_per_batch, counts.shape[0])
  return _compositor(features.shape[-1], tile_size, tiles_per_batch, block_size)(table, layout)
