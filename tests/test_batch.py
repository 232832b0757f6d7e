"""The typed batch: the data pipeline builds it whole (perceptual resize weights included), it
goes through pickling (Grain workers) and the loop's batch sharding as it is, and the trainer
tells the pipeline the perceptual canvas from its loss config."""
import dataclasses
import pickle

import jax
import ml_collections
import numpy as np
import pytest

from atoken_jax import batch as batch_lib
from atoken_jax import packing, perceptual_canvas, sharding, tokens
from atoken_jax.pos_interp import antialiased_bilinear_weights
from atoken_jax.train import loop as loop_lib
from atoken_jax.train import perceptual_inputs
from data_pipelines import build_task_iterator
from experiments import common
from tests.test_data_pipeline import folder, image_cfg  # noqa: F401 (fixture)

SIZE, MAX_SIDE = 24, 96


def _images_batch(rows=8):
  rng = np.random.default_rng(0)
  seqs = [tokens.to_tokens(rng.uniform(-1, 1, (16 * (i % 3 + 1), 32, 3)).astype(np.float32))
          for i in range(rows)]
  return packing.pack(seqs, row_len=16, max_samples_per_row=2, num_rows=rows)


def test_the_field_roles_partition_the_fields_and_the_views_drop_the_right_ones():
  b = _images_batch(2)
  roles = set(batch_lib.MODEL_FIELDS) | set(batch_lib.HOST_FIELDS) | set(batch_lib.LOSS_FIELDS)
  assert roles == set(batch_lib.FIELDS) and len(batch_lib.FIELDS) == (
      len(batch_lib.MODEL_FIELDS) + len(batch_lib.HOST_FIELDS) + len(batch_lib.LOSS_FIELDS))
  # the packer fills everything but the optional fields
  optional = {"text_embedding", "image_rows", "image_cols", "image_valid"}
  assert set(b.arrays()) == set(batch_lib.FIELDS) - optional
  assert set(b.for_device().arrays()) == set(b.arrays()) - set(batch_lib.HOST_FIELDS)
  assert set(b.for_model().arrays()) == set(batch_lib.MODEL_FIELDS)
  assert all(np.shape(v)[0] == 2 for v in b.arrays().values())  # every field leads with B
  assert b.shape == (2, 16, 2)


def test_pipeline_batches_carry_the_resize_weights_of_their_images(folder):  # noqa: F811
  cfg = image_cfg(folder, **{"perceptual.size": SIZE, "perceptual.max_side": MAX_SIDE})
  it = build_task_iterator(cfg)
  try:
    batches = [next(it) for _ in range(3)]
    state = it.get_state()
    after = next(it)
  finally:
    it.close()
  canvas = MAX_SIDE
  images = 0
  for b in batches:
    assert b.image_rows.shape == b.image_cols.shape == (2, 8, SIZE, canvas)
    used = b.sample_index >= 0
    np.testing.assert_array_equal(b.image_valid, used & (b.modality == 0))
    # the host function the training loop used to call, on the same packed batch
    want = perceptual_canvas.resize_weights(b.replace(image_rows=None, image_cols=None,
                                                      image_valid=None),
                                            SIZE, MAX_SIDE // 16)
    for k, v in want.items():
      np.testing.assert_array_equal(getattr(b, k), v, err_msg=k)
    # and independently: each image's (H, W) after crop, resized to SIZE, zero beyond it
    for r, k in zip(*np.nonzero(used)):
      _, h, w = b.orig_shape[r, k]
      np.testing.assert_allclose(b.image_rows[r, k, :, :h], antialiased_bilinear_weights(h, SIZE))
      np.testing.assert_allclose(b.image_cols[r, k, :, :w], antialiased_bilinear_weights(w, SIZE))
      assert not b.image_rows[r, k, :, h:].any() and not b.image_cols[r, k, :, w:].any()
      images += 1
    assert not b.image_rows[~used].any()
  assert images >= 4
  again = build_task_iterator(cfg)  # resume: the restored batch has the same weights
  try:
    again.set_state(state)
    np.testing.assert_array_equal(next(again).image_rows, after.image_rows)
  finally:
    again.close()
  plain = build_task_iterator(image_cfg(folder))
  try:
    assert next(plain).image_rows is None  # size 0: no weights
  finally:
    plain.close()


def test_a_too_small_canvas_is_one_clear_error():
  b = _images_batch(3)  # images up to 48 px
  with pytest.raises(ValueError, match="perceptual canvas of 32 px"):
    perceptual_canvas.with_resize_weights(b, 16, 32)
  with pytest.raises(ValueError, match="multiple of 16"):
    perceptual_canvas.with_resize_weights(b, 16, 40)


def test_the_batch_pickles_for_grain_workers():
  b = perceptual_canvas.with_resize_weights(_images_batch(2), 16, 64)
  again = pickle.loads(pickle.dumps(b))
  assert type(again) is batch_lib.Batch
  for k, v in b.arrays().items():
    np.testing.assert_array_equal(getattr(again, k), v, err_msg=k)


def test_the_batch_goes_through_the_loops_sharding_as_it_is():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices")
  host = perceptual_canvas.with_resize_weights(_images_batch(8), 16, 64)
  mesh = sharding.make_mesh(data=2, fsdp=4)
  device = loop_lib.global_batch(batch_lib.for_device(host), mesh)
  assert type(device) is batch_lib.Batch
  assert jax.tree.structure(device) == jax.tree.structure(host.for_device())
  for name in batch_lib.HOST_FIELDS:
    assert getattr(device, name) is None
  for name, v in device.arrays().items():
    assert v.sharding == sharding.batch_sharding(mesh, v.ndim), name
    assert len(v.sharding.device_set) == 8 and v.addressable_shards[0].data.shape[0] == 1
  back = sharding.to_host(device)
  for name, v in back.arrays().items():
    np.testing.assert_array_equal(v, getattr(host, name), err_msg=name)
  # a pytree holding a Batch (the 3D task's views + tokens) is placed the same way
  mixed = loop_lib.global_batch(batch_lib.for_device({"views": np.zeros((8, 3)),
                                                      "tokens": host}), mesh)
  assert mixed["tokens"].token_index is None and mixed["views"].shape == (8, 3)


def test_the_trainer_gives_image_tasks_the_canvas_only_when_a_perceptual_term_is_on():
  loss = common.base("tiny").loss  # tiny: L1 + KL only
  data = ml_collections.ConfigDict(dict(perceptual=dict(size=0, max_side=0)))
  assert perceptual_inputs.data_canvas(loss, data, "image") is data
  for term in ("lpips", "gram", "clip", "sem"):
    on = ml_collections.ConfigDict(loss.to_dict())
    on[term] = 1.0
    got = perceptual_inputs.data_canvas(on, data, "image")
    assert (got.perceptual.size, got.perceptual.max_side) == (loss.perceptual_size,
                                                              loss.perceptual_max_side), term
    assert perceptual_inputs.data_canvas(on, data, "video") is data
  assert data.perceptual.size == 0  # the input is not changed


def test_synthetic_batches_are_batches_like_the_pipelines():
  from tests import synthetic_data  # pylint: disable=import-outside-toplevel
  b = next(synthetic_data.SyntheticImages(rows=2, perceptual=(16, 64)))
  assert type(b) is batch_lib.Batch and b.image_rows is not None
  assert {f.name for f in dataclasses.fields(b)} == set(batch_lib.FIELDS)
