"""Bad-data accounting: per-reason counters, warnings, and the max-bad-fraction abort.

Every batch of the packing stage comes with what happened to the records it read (stats). A
task's `DataStats` (in the training process) adds them up, logs a warning for the first
`warn_limit` bad records, exposes everything as metrics, and raises `BadDataError` -- one message
naming the worst files -- once more than `max_fraction` of at least `min_records` records were
bad. Records too long for a row are counted as notes ("dropped_too_long"), not as bad data.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("data_pipelines")
MAX_TRACKED_FILES = 256


class BadDataError(RuntimeError):
  """Too much of the data could not be used."""


class DataStats:
  """Running totals of one task's data stream; part of the iterator's checkpointed state."""

  def __init__(self, task: str, max_fraction: float = 0.1, min_records: int = 50,
               warn_limit: int = 20):
    self.task = task
    self.max_fraction, self.min_records, self.warn_limit = max_fraction, min_records, warn_limit
    self.records = self.samples = self.real_tokens = self.capacity = self.batches = 0
    self.bad: dict[str, int] = {}
    self.notes: dict[str, int] = {}
    self.files: dict[str, list] = {}  # name -> [count, reason, message]

  @property
  def num_bad(self) -> int:
    return sum(self.bad.values())

  def update(self, stats: dict[str, Any]) -> None:
    """Adds one batch's stats; raises BadDataError past the configured bad fraction."""
    self.batches += 1
    self.records += stats["records"]
    self.samples += stats["samples"]
    self.real_tokens += stats["real_tokens"]
    self.capacity += stats["capacity"]
    for key, n in stats["notes"].items():
      self.notes[key] = self.notes.get(key, 0) + n
    seen_before = self.num_bad
    for reason, n in stats["bad"].items():
      self.bad[reason] = self.bad.get(reason, 0) + n
    for i, (name, reason, message) in enumerate(stats["bad_names"]):
      entry = self.files.get(name)
      if entry is not None:
        entry[0] += 1
      elif len(self.files) < MAX_TRACKED_FILES:
        self.files[name] = [1, reason, message]
      if seen_before + i < self.warn_limit:
        log.warning("[%s] skipping bad data (%s): %s %s", self.task, reason, name, message)
        if seen_before + i + 1 == self.warn_limit:
          log.warning("[%s] further bad records are only counted (metrics data/bad/*)",
                      self.task)
    self.check()

  def check(self) -> None:
    if self.records < self.min_records or self.records == 0:
      return
    fraction = self.num_bad / self.records
    if fraction > self.max_fraction:
      raise BadDataError(self.message(fraction))

  def worst_files(self, k: int = 5) -> list[tuple[str, int, str, str]]:
    """Up to k (name, times bad, reason, message), most often bad first, then first seen."""
    ranked = sorted(self.files.items(), key=lambda kv: -kv[1][0])[:k]
    return [(name, n, reason, msg) for name, (n, reason, msg) in ranked]

  def message(self, fraction: float) -> str:
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.bad.items(), key=lambda kv: -kv[1]))
    files = "; ".join(f"{name} ({reason} x{n}: {msg})" for name, n, reason, msg in
                      self.worst_files())
    return (f"task {self.task!r}: {self.num_bad} of {self.records} records "
            f"({fraction:.1%}) were unusable, more than the allowed "
            f"{self.max_fraction:.1%} (config bad.max_fraction). Reasons: {reasons}. "
            f"Worst files: {files}")

  def metrics(self) -> dict[str, float]:
    """Flat metrics: data/records, data/bad, data/bad_fraction, data/bad/<reason>, ..."""
    out = {"data/records": self.records, "data/samples": self.samples,
           "data/batches": self.batches, "data/bad": self.num_bad,
           "data/bad_fraction": self.num_bad / max(self.records, 1),
           "data/packing_efficiency": self.real_tokens / max(self.capacity, 1)}
    out.update({f"data/bad/{r}": n for r, n in self.bad.items()})
    out.update({f"data/{k}": n for k, n in self.notes.items()})
    return {k: float(v) for k, v in out.items()}

  def state(self) -> dict:
    return {"records": self.records, "samples": self.samples, "batches": self.batches,
            "real_tokens": self.real_tokens, "capacity": self.capacity, "bad": dict(self.bad),
            "notes": dict(self.notes), "files": {k: list(v) for k, v in self.files.items()}}

  def load_state(self, state: dict) -> None:
    for key in ("records", "samples", "batches", "real_tokens", "capacity"):
      setattr(self, key, int(state[key]))
    self.bad, self.notes = dict(state["bad"]), dict(state["notes"])
    self.files = {k: list(v) for k, v in state["files"].items()}
