"""Video files -> frames chosen by time on a constant-rate timeline.

Frames are shown at their presentation timestamps, which need not be evenly spaced (variable
frame rate: phone videos, screen recordings, animated GIF/WebP with per-frame durations).
Frames are chosen on a constant-rate timeline: tick i is at time t0 + i / fps and shows the
frame on screen then (the last frame whose timestamp is <= the tick time). For a constant-rate
video tick i is frame i; for a variable-rate one a frame shown for long is repeated and brief
frames may be skipped, so choosing ticks at some rate samples the video by time at that rate.

The timeline's fps is 1 / the median gap between frame times (the usual rate of a
variable-rate file; exactly the rate of a constant-rate one; at most 120), the container's
rate for a single frame or a stream without timestamps; the ticks reach the last frame and
cover its duration. Files: anything PyAV (FFmpeg) reads; GIF and WebP through Pillow
(which composes the frames; durations <= 10 ms count as 100 ms, as browsers do).
"""
from __future__ import annotations

import io
from typing import Callable, Iterable, Sequence

import numpy as np

from data_pipelines import image_decode

_MAX_FPS = 120.0
_TIE = 0.25  # a frame within a quarter tick after a tick time is on screen at that tick


class VideoDecodeError(ValueError):
  """A file whose frames cannot be read; `reason` names the kind of failure."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def is_pillow_animation(data: bytes) -> bool:
  return data[:6] in (b"GIF87a", b"GIF89a") or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def timeline_fps(timestamps: np.ndarray, fallback: float) -> float:
  """1 / the median gap between frame times (capped), or `fallback` for a single frame."""
  gaps = np.diff(timestamps)
  gaps = gaps[gaps > 0]
  if not len(gaps):
    return fallback
  return min(_MAX_FPS, 1.0 / float(np.median(gaps)))


def num_ticks(timestamps: np.ndarray, last_duration: float, fps: float) -> int:
  """Ticks at `fps` that reach the last frame and cover its duration (>= 1)."""
  span = float(timestamps[-1] - timestamps[0])
  return max(1, int(round(span * fps)) + 1, int(round((span + last_duration) * fps)))


def select(frames: Iterable, wanted_times: Sequence[float], tie: float, max_gap: float,
           to_array: Callable) -> list[np.ndarray]:
  """Streams (time, frame) in presentation order; picks the frame on screen at each wanted time.

  Args:
    frames: iterable of (time in seconds, frame object), in presentation order.
    wanted_times: sorted times.
    tie: a frame up to this many seconds after a wanted time still counts as on screen.
    max_gap: the longest a frame is shown; a wanted time further than this past the last
      frame decoded means the stream ended early (truncated).
    to_array: frame object -> uint8 [H, W, 3].

  Returns:
    One uint8 [H, W, 3] per wanted time (a frame repeated where it is on screen at several).
  """
  out: list = []
  prev, prev_time, prev_array = None, None, None
  k = 0

  def take(frame):
    nonlocal prev_array
    if prev_array is None:
      prev_array = to_array(frame)
    return prev_array

  for time, frame in frames:
    while k < len(wanted_times) and wanted_times[k] + tie < time:
      out.append(take(prev if prev is not None else frame))
      k += 1
    if k == len(wanted_times):
      break
    prev, prev_time, prev_array = frame, time, None
  if k < len(wanted_times):
    if prev is None or wanted_times[-1] - prev_time > max_gap:
      got = "no frames" if prev is None else f"frames up to {prev_time:.3f} s"
      raise VideoDecodeError("decode_error", f"truncated video: {got} decoded, "
                             f"{wanted_times[-1]:.3f} s wanted")
    out.extend([take(prev)] * (len(wanted_times) - k))
  return out


class _ChooseFailed(Exception):
  """Carries an exception raised by the caller's `choose` through the decoding guard."""

  def __init__(self, error: BaseException):
    super().__init__(str(error))
    self.error = error


def _wanted(choose, total: int, fps: float) -> list[int]:
  try:
    indices = [int(i) for i in choose(total, fps)]
  except Exception as e:  # noqa: BLE001 - re-raised unchanged by decode_frames
    raise _ChooseFailed(e) from None
  if not indices or min(indices) < 0 or max(indices) >= total or indices != sorted(indices):
    raise VideoDecodeError("decode_error", f"bad frame selection for {total} frames")
  return indices


def _pyav_frames(data: bytes, choose) -> tuple[list[np.ndarray], float]:
  import av  # pylint: disable=import-outside-toplevel
  with av.open(io.BytesIO(data)) as container:
    if not container.streams.video:
      raise VideoDecodeError("decode_error", "no video stream")
    stream = container.streams.video[0]
    base = float(stream.time_base or 0) or None
    packets = [(p.pts, p.duration) for p in container.demux(stream) if p.size > 0]
    rate = float(stream.average_rate or stream.guessed_rate or 0.0)
  if not packets:
    raise VideoDecodeError("decode_error", "no video frames")
  by_index = base is None or any(pts is None for pts, _ in packets)
  if by_index:  # no timestamps: assume a constant rate
    fps = rate or 30.0
    times = np.arange(len(packets)) / fps
    last = 1.0 / fps
  else:
    times = np.sort(np.array([pts for pts, _ in packets], np.float64)) * base
    fps = timeline_fps(times, rate or 30.0)
    last_duration = max(packets, key=lambda p: p[0])[1]
    last = last_duration * base if last_duration else 1.0 / fps
  total = num_ticks(times, last, fps)
  indices = _wanted(choose, total, fps)
  wanted = [times[0] + i / fps for i in indices]
  max_gap = max(float(np.max(np.diff(times), initial=0.0)), last) + _TIE / fps

  with av.open(io.BytesIO(data)) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"

    def timed():
      for i, frame in enumerate(container.decode(stream)):
        use_index = by_index or frame.time is None
        yield (times[0] + i / fps if use_index else frame.time), frame

    frames = select(timed(), wanted, _TIE / fps, max_gap,
                    lambda f: f.to_ndarray(format="rgb24"))
  return frames, fps


def _pillow_frames(data: bytes, choose) -> tuple[list[np.ndarray], float]:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(io.BytesIO(data)) as img:
    count = int(getattr(img, "n_frames", 1))
    durations = []
    for i in range(count):
      img.seek(i)
      img.load()
      ms = img.info.get("duration") or 0
      durations.append((ms if ms > 10 else 100) / 1000.0)
    durations = np.asarray(durations)
    times = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    fps = timeline_fps(times, 1.0 / float(durations[0]))
    total = num_ticks(times, float(durations[-1]), fps)
    indices = _wanted(choose, total, fps)
    wanted = [i / fps for i in indices]

    def to_array(i):
      img.seek(i)
      return np.asarray(image_decode.to_rgb(img))

    frames = select(zip(times.tolist(), range(count)), wanted, _TIE / fps,
                    float(durations.max()) + _TIE / fps, to_array)
  return frames, fps


def decode_frames(data: bytes, choose: Callable[[int, float], Sequence[int]]
                  ) -> tuple[list[np.ndarray], float]:
  """Encoded video (or animated GIF/WebP) -> (frames at the chosen ticks, timeline fps).

  Args:
    data: the file's bytes.
    choose: (number of ticks, timeline fps) -> sorted tick indices; what it raises passes
      through unchanged.

  Returns:
    uint8 [H, W, 3] frames, one per chosen tick, and the timeline's fps.

  Raises:
    VideoDecodeError: "empty_file" or "decode_error" (unreadable, truncated, bad selection).
  """
  if not data:
    raise VideoDecodeError("empty_file", "0 bytes")
  reader = _pillow_frames if is_pillow_animation(data) else _pyav_frames
  try:
    return reader(data, choose)
  except _ChooseFailed as e:
    raise e.error from None  # the caller's own refusal (e.g. too few frames)
  except VideoDecodeError:
    raise
  except Exception as e:  # noqa: BLE001 - PyAV and Pillow raise many types on bad files
    raise VideoDecodeError("decode_error", f"{type(e).__name__}: {e}") from None
