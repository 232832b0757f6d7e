"""Zero-shot classification and retrieval metrics on embeddings (host numpy, any sizes).

Similarity is the cosine of L2-normalised embeddings; SigLIP's logit scale and bias are a
monotone map of it and change no ranking.

Recall@K: the fraction of queries whose best-ranked correct document is among the top K. The
rank of a query is the number of documents scoring strictly higher than its best positive
(ties count in the query's favour; with float embeddings they do not occur in practice).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """[..., D] -> unit vectors (float32); zero rows stay zero."""
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def best_positive_ranks(sim: np.ndarray, positives: Sequence[Sequence[int]],
                        chunk: int = 1024) -> np.ndarray:
  """sim [Nq, Nd]; positives[q]: indices of q's correct documents -> rank [Nq] (0 = first;
  -1 for a query without any positive)."""
  sim = np.asarray(sim, np.float32)
  if len(positives) != sim.shape[0]:
    raise ValueError(f"{len(positives)} positive lists for {sim.shape[0]} queries")
  ranks = np.empty(sim.shape[0], np.int64)
  for start in range(0, sim.shape[0], chunk):
    block = sim[start:start + chunk]
    pos = positives[start:start + chunk]
    best = np.array([block[i, list(p)].max() if len(p) else np.inf for i, p in enumerate(pos)],
                    np.float32)
    ranks[start:start + len(block)] = np.where([len(p) > 0 for p in pos],
                                               (block > best[:, None]).sum(axis=1), -1)
  return ranks


def recall_at_k(sim: np.ndarray, positives: Sequence[Sequence[int]],
                ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """{"R@1": %, "R@5": %, "R@10": %} (percent) for queries = rows of `sim`; queries without a
  positive (e.g. an image without captions) are left out."""
  ranks = best_positive_ranks(sim, positives)
  ranks = ranks[ranks >= 0]
  if not len(ranks):
    return {f"R@{k}": None for k in ks}
  return {f"R@{k}": float(100.0 * np.mean(ranks < k)) for k in ks}


def retrieval_metrics(media_emb: np.ndarray, text_emb: np.ndarray, text_to_media: Sequence[int],
                      ks: Sequence[int] = (1, 5, 10), media: str = "image") -> dict[str, dict]:
  """Both directions of image–text (or video–text) retrieval.

  Args:
    media_emb: [Nm, D] image / video embeddings. text_emb: [Nt, D] caption embeddings.
    text_to_media: [Nt] index of each caption's image / video (several captions may share one).
    media: "image" or "video" (only names the keys: "t2i"/"i2t" or "t2v"/"v2t").

  Returns:
    {"t2i": {"R@1", ...}, "i2t": {...}} in percent.
  """
  m, t = l2_normalize(media_emb), l2_normalize(text_emb)
  text_to_media = np.asarray(text_to_media, np.int64)
  if len(text_to_media) != len(t):
    raise ValueError(f"{len(text_to_media)} caption->media indices for {len(t)} captions")
  sim = t @ m.T  # [Nt, Nm]
  captions_of = [[] for _ in range(len(m))]
  for j, i in enumerate(text_to_media.tolist()):
    captions_of[i].append(j)
  c = media[0]
  return {f"t2{c}": recall_at_k(sim, [[i] for i in text_to_media.tolist()], ks),
          f"{c}2t": recall_at_k(sim.T, captions_of, ks)}


def class_embeddings(encode_texts: Callable[[list[str]], np.ndarray], classnames: Sequence[str],
                     templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
  """Zero-shot classifier weights [C, D]: per class, the normalised mean of the normalised
  embeddings of its prompts `template.format(name)` (CLIP's prompt ensembling)."""
  prompts = [t.format(name) for name in classnames for t in templates]
  emb = l2_normalize(encode_texts(prompts)).reshape(len(classnames), len(templates), -1)
  return l2_normalize(emb.mean(axis=1))


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)
                   ) -> dict[str, float]:
  """{"top1": %, "top5": %}: the label is among the k highest logits [N, C]."""
  logits, labels = np.asarray(logits), np.asarray(labels, np.int64)
  true = logits[np.arange(len(labels)), labels]
  rank = (logits > true[:, None]).sum(axis=1)
  return {f"top{k}": float(100.0 * np.mean(rank < k)) for k in ks if k <= logits.shape[1]}


def zero_shot_accuracy(media_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray,
                       ks: Sequence[int] = (1, 5)) -> dict[str, float]:
  """Top-k accuracy of cosine similarity between media [N, D] and class embeddings [C, D]."""
  return top_k_accuracy(l2_normalize(media_emb) @ l2_normalize(class_emb).T, labels, ks)


def average_frame_embeddings(frame_emb: np.ndarray) -> np.ndarray:
  """[F, D] per-frame embeddings -> [D] video embedding: the normalised mean of the normalised
  frame embeddings (the paper's frame-embedding averaging, §7)."""
  return l2_normalize(l2_normalize(frame_emb).mean(axis=0))
