"""Understanding protocols (paper §7, Tables 5, 7, 8): the tokenizer's pooled, L2-normalised
embedding (`Encoding.embedding`, the release's `image_feat`) against the frozen text tower.

* zero_shot:            class-name prompts → class embeddings; top-1 / top-5 accuracy.
* image_text_retrieval: every caption of every image; T→I and I→T Recall@1/5/10.
* video_text_retrieval: `num_frames` frames sampled uniformly; each frame encoded on its own —
                        as a 1-frame video that the tokenizer zero-pads to 4 frames
                        (`frame_mode="video_pad"`, the paper's "temporal zero-padding") or as an
                        image (`"image"`) — and the frame embeddings averaged; T→V and V→T R@k.
* zero_shot_3d:         voxel sets (meshes, NeRF folders, prepared .npz) vs class prompts.

Images use the SigLIP protocol by default: the whole image resized to `size`×`size`
(`protocol="resize"`); `size` 256 / 384 / 512 gives the paper's 256 / 576 / 1024 tokens.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from atoken_jax.eval import data as data_lib
from atoken_jax.eval import retrieval


def _embed(tokenizer, inputs, posterior="mean") -> np.ndarray:
  return np.asarray(tokenizer.encode(inputs, posterior=posterior).embedding, np.float32)


def _embed_items(tokenizer, items, to_input: Callable, batch_size: int, progress, total):
  """-> (kept items, embeddings [N, D])."""
  kept, embs, batch = [], [], []
  for item in progress(items, total=total):
    batch.append(item)
    if len(batch) == batch_size:
      embs.append(_embed(tokenizer, [to_input(b) for b in batch]))
      kept += batch
      batch = []
  if batch:
    embs.append(_embed(tokenizer, [to_input(b) for b in batch]))
    kept += batch
  return kept, (np.concatenate(embs) if embs else np.zeros((0, 0), np.float32))


def _templates(task):
  return tuple(task.get("templates", None) or retrieval.DEFAULT_TEMPLATES)


def _need_text(res):
  if res.text is None:
    raise ValueError("understanding tasks need the text tower: set text.checkpoint (SigLIP2) "
                     "or text.random_preset")
  return res.text


def zero_shot(tokenizer, task, res, *, batch_size: int = 32, progress=lambda it, **_: it
              ) -> dict[str, Any]:
  """Zero-shot classification of images in class folders / a labelled TFDS split."""
  text = _need_text(res)
  size, mode = int(task.get("size", 256)), task.get("protocol", "resize")
  source = data_lib.open_source(task.data, "image", with_labels=True)
  skipped = []
  items = data_lib.iter_items(source, lambda r: data_lib.read_image(
      r, mode, size, task.get("resample", "bilinear")), skipped)
  kept, emb = _embed_items(tokenizer, items, lambda b: data_lib.to_unit_range(b.pixels),
                           batch_size, progress, len(source))
  return _classify(kept, emb, source.classes, text, task, skipped, "zero_shot")


def _classify(kept, emb, classes, text, task, skipped, kind) -> dict[str, Any]:
  labels = np.array([k.label for k in kept], np.int64)
  class_emb = retrieval.class_embeddings(text, classes, _templates(task))
  logits = retrieval.l2_normalize(emb) @ class_emb.T
  acc = retrieval.top_k_accuracy(logits, labels, (1, 5))
  pred = logits.argmax(axis=1)
  rows = [{"name": k.name, "label": int(l), "pred": int(p)} for k, l, p in zip(kept, labels, pred)]
  return {"kind": kind, "count": len(kept), "metrics": acc, "per_item": rows,
          "classes": list(classes), "skipped": skipped, "notes": []}


def _retrieval_result(kind, kept, media_emb, text, skipped, media) -> dict[str, Any]:
  captions, owner = [], []
  for i, k in enumerate(kept):
    captions += list(k.captions)
    owner += [i] * len(k.captions)
  notes = []
  missing = sum(1 for k in kept if not k.captions)
  if missing:
    notes.append(f"{missing} items have no caption (still retrievable as distractors)")
  if not captions:
    raise ValueError(f"{kind}: no captions found (sidecar .txt files or data.caption_key)")
  metrics = retrieval.retrieval_metrics(media_emb, text(captions), owner, media=media)
  return {"kind": kind, "count": len(kept), "captions": len(captions), "metrics": metrics,
          "per_item": [{"name": k.name, "captions": len(k.captions)} for k in kept],
          "skipped": skipped, "notes": notes}


def image_text_retrieval(tokenizer, task, res, *, batch_size: int = 32,
                         progress=lambda it, **_: it) -> dict[str, Any]:
  """COCO / Flickr30k style retrieval: images with one or more captions each."""
  text = _need_text(res)
  size, mode = int(task.get("size", 256)), task.get("protocol", "resize")
  source = data_lib.open_source(task.data, "image")
  skipped = []
  items = data_lib.iter_items(source, lambda r: data_lib.read_image(
      r, mode, size, task.get("resample", "bilinear")), skipped)
  kept, emb = _embed_items(tokenizer, items, lambda b: data_lib.to_unit_range(b.pixels),
                           batch_size, progress, len(source))
  return _retrieval_result("image_text_retrieval", kept, emb, text, skipped, "image")


def _frame_inputs(frames: np.ndarray, size: int, mode: str) -> list[np.ndarray]:
  """uint8 [F, H, W, 3] → F inputs in [-1, 1], each resized to size×size (SigLIP protocol)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  out = []
  for f in frames:
    x = data_lib.to_unit_range(data_lib.resize_square(Image.fromarray(f), size))
    out.append(x[None] if mode == "video_pad" else x)
  return out


def video_embeddings(tokenizer, frames: np.ndarray, size: int = 224, mode: str = "video_pad"
                     ) -> np.ndarray:
  """One video's frames uint8 [F, H, W, 3] → its embedding [D] (frame-embedding averaging)."""
  if mode not in ("video_pad", "image"):
    raise ValueError(f"frame_mode must be 'video_pad' or 'image', got {mode!r}")
  return retrieval.average_frame_embeddings(_embed(tokenizer, _frame_inputs(frames, size, mode)))


def video_text_retrieval(tokenizer, task, res, *, progress=lambda it, **_: it) -> dict[str, Any]:
  """MSR-VTT / MSVD style retrieval with frame-embedding averaging."""
  text = _need_text(res)
  size, mode = int(task.get("size", 224)), task.get("frame_mode", "video_pad")
  num_frames = int(task.get("num_frames", 8))
  source = data_lib.open_source(task.data, "video")
  skipped = []
  items = data_lib.iter_items(source, lambda r: data_lib.read_video(r, num_frames, "uniform"),
                              skipped)
  kept, embs = [], []
  for item in progress(items, total=len(source)):
    embs.append(video_embeddings(tokenizer, item.pixels, size, mode))
    kept.append(item)
  emb = np.stack(embs) if embs else np.zeros((0, 0), np.float32)
  return _retrieval_result("video_text_retrieval", kept, emb, text, skipped, "video")


def zero_shot_3d(tokenizer, task, res, *, batch_size: int = 8, progress=lambda it, **_: it
                 ) -> dict[str, Any]:
  """Toys4k-style zero-shot classification of 3D assets in class folders."""
  text = _need_text(res)
  source = data_lib.open_source(task.data, "voxels", with_labels=True)
  skipped = []
  views, seed = int(task.get("num_views", 150)), int(task.get("seed", 0))
  items = data_lib.iter_items(source, lambda r: data_lib.read_voxels(r, views, seed), skipped)
  kept, emb = _embed_items(tokenizer, items, lambda b: b.voxels, batch_size, progress,
                           len(source))
  return _classify(kept, emb, source.classes, text, task, skipped, "zero_shot_3d")
