"""Retrieval and zero-shot metrics: R@k against brute-force ranking, top-k accuracy, prompt
ensembling, frame averaging, and the zero-shot / retrieval tasks on folders with a known answer."""
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

from atoken_jax.eval import retrieval, understanding


def _brute_recall(sim, positives, k):
  """For each query with a positive, sort all documents (descending) and look for a positive in
  the top k."""
  hits, queries = 0, 0
  for q, row in enumerate(sim):
    if positives[q]:
      order = np.argsort(-row, kind="stable")[:k]
      hits += any(d in positives[q] for d in order)
      queries += 1
  return 100.0 * hits / queries


def test_recall_matches_brute_force_ranking():
  rng = np.random.default_rng(0)
  media, texts = rng.normal(size=(40, 16)), rng.normal(size=(120, 16))
  owner = rng.integers(0, 40, 120)
  got = retrieval.retrieval_metrics(media, texts, owner)
  m = media / np.linalg.norm(media, axis=1, keepdims=True)
  t = texts / np.linalg.norm(texts, axis=1, keepdims=True)
  sim = t @ m.T
  captions_of = [set(np.nonzero(owner == i)[0]) for i in range(40)]
  assert not all(captions_of), "the case should include images without captions"
  for k in (1, 5, 10):
    assert got["t2i"][f"R@{k}"] == pytest.approx(_brute_recall(sim, [{o} for o in owner], k))
    assert got["i2t"][f"R@{k}"] == pytest.approx(_brute_recall(sim.T, captions_of, k))
  assert got["t2i"]["R@1"] <= got["t2i"]["R@5"] <= got["t2i"]["R@10"]


def test_perfect_and_adversarial_retrieval():
  e = np.eye(6, dtype=np.float32)
  assert retrieval.retrieval_metrics(e, e, range(6))["t2i"] == {"R@1": 100.0, "R@5": 100.0,
                                                                 "R@10": 100.0}
  # Each caption is closest to the next image: R@1 = 0, but the right one is second.
  shifted = np.roll(e, 1, axis=1) + 0.5 * e
  got = retrieval.retrieval_metrics(e, shifted, range(6))["t2i"]
  assert got["R@1"] == 0.0 and got["R@5"] == 100.0


def test_top_k_accuracy_and_prompt_ensembling():
  logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.1]])
  acc = retrieval.top_k_accuracy(logits, np.array([1, 2, 2]), ks=(1, 2))
  assert acc == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(200 / 3)}
  seen = []

  def encode(texts):
    seen.extend(texts)
    return np.array([[len(t), 1.0] for t in texts])
  w = retrieval.class_embeddings(encode, ["cat", "zebra"], ("a {}.", "the {} here."))
  assert seen == ["a cat.", "the cat here.", "a zebra.", "the zebra here."]
  assert w.shape == (2, 2) and np.allclose(np.linalg.norm(w, axis=1), 1)


def test_frame_averaging_is_normalised_mean_of_normalised_frames():
  f = np.array([[3.0, 0.0], [0.0, 0.5]])
  np.testing.assert_allclose(retrieval.average_frame_embeddings(f), [2 ** -0.5, 2 ** -0.5],
                             rtol=1e-6)


# --------------------------------------------------------------------------- tasks, known answers
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 30), "blue": (10, 30, 230)}


class ColourTokenizer:
  """Stand-in tokenizer: the embedding of an image / video / frame is its mean RGB."""

  def encode(self, inputs, posterior="mean"):
    del posterior
    emb = np.stack([np.asarray(x).reshape(-1, 3).mean(0) + 1.0 for x in inputs])
    return types.SimpleNamespace(embedding=emb / np.linalg.norm(emb, axis=1, keepdims=True))


def colour_text(texts):
  """Stand-in text tower: a text's embedding is the colour its words name (normalised)."""
  out = []
  for t in texts:
    v = sum(np.array(c, np.float64) / 127.5 for n, c in COLOURS.items() if n in t)
    out.append(np.asarray(v, np.float64) + 1e-3)
  out = np.array(out)
  return out / np.linalg.norm(out, axis=1, keepdims=True)


def _res():
  return types.SimpleNamespace(text=colour_text)


def test_zero_shot_classification_on_class_folders_is_exact(tmp_path):
  rng = np.random.default_rng(0)
  for name, rgb in COLOURS.items():
    d = tmp_path / f"{name}_things"
    d.mkdir()
    for i in range(3):
      px = np.clip(np.array(rgb) + rng.normal(0, 10, (24, 40, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(px).save(d / f"{i}.png")
  task = ml_collections.ConfigDict(dict(kind="zero_shot", size=16, templates=["a {} photo"],
                                        data=dict(folder=str(tmp_path))))
  res = understanding.zero_shot(ColourTokenizer(), task, _res(), batch_size=4)
  assert res["classes"] == ["blue things", "green things", "red things"]  # sorted folders
  assert res["count"] == 9 and res["metrics"]["top1"] == 100.0
  assert [r["label"] for r in res["per_item"]] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_image_and_video_text_retrieval_with_known_pairs(tmp_path):
  from atoken_jax.render.turntable import write_video
  (tmp_path / "img").mkdir()
  (tmp_path / "vid").mkdir()
  for name, rgb in COLOURS.items():
    Image.new("RGB", (32, 32), rgb).save(tmp_path / "img" / f"{name}.png")
    (tmp_path / "img" / f"{name}.txt").write_text(f"something {name}\nall {name} here\n")
    vid = np.broadcast_to(np.array(rgb, np.uint8), (6, 32, 32, 3))
    write_video(np.ascontiguousarray(vid), tmp_path / "vid" / f"{name}.mp4", fps=4)
  (tmp_path / "vid" / "red.txt").write_text("a red clip")
  (tmp_path / "vid" / "blue.txt").write_text("a blue clip")
  task = ml_collections.ConfigDict(dict(kind="image_text_retrieval", size=16,
                                        data=dict(folder=str(tmp_path / "img"))))
  res = understanding.image_text_retrieval(ColourTokenizer(), task, _res())
  assert res["count"] == 3 and res["captions"] == 6
  assert res["metrics"]["t2i"]["R@1"] == 100.0 and res["metrics"]["i2t"]["R@1"] == 100.0
  task = ml_collections.ConfigDict(dict(kind="video_text_retrieval", size=16, num_frames=3,
                                        frame_mode="image",
                                        data=dict(folder=str(tmp_path / "vid"))))
  res = understanding.video_text_retrieval(ColourTokenizer(), task, _res())
  assert res["count"] == 3 and res["captions"] == 2
  assert res["notes"] == ["1 items have no caption (still retrievable as distractors)"]
  assert res["metrics"]["t2v"]["R@1"] == 100.0
