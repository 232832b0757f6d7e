"""Decoding the files users have: 16-bit / float / palette / alpha / CMYK / EXIF-rotated
pictures, animated GIF/WebP as video, variable-frame-rate video sampled by time, symlinked
folders (and loops). Every file is written here by Pillow or PyAV."""
import io
import os
import pickle
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from data_pipelines import decode, decoded_cache, folder_source, prepare, transforms


def _image(data: bytes) -> np.ndarray:
  return np.asarray(decode.decode_image({"kind": "image", "bytes": data}))


def _saved(img: Image.Image, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def test_16_bit_greyscale_png_maps_to_8_bit_by_scaling_not_clipping():
  ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)[None].repeat(3, 0)
  data = _saved(Image.fromarray(ramp), "PNG")
  assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
  out = _image(data)
  assert out.shape == (3, 256, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0, :, 0], np.round(ramp[0] / 257.0).astype(np.uint8))
  assert (out[..., 0] == out[..., 2]).all() and out.min() == 0 and out.max() == 255


def test_float_tiff_in_unit_range_maps_to_8_bit():
  ramp = np.linspace(-0.5, 1.5, 201, dtype=np.float32)[None].repeat(2, 0)
  ramp[1, 0] = np.nan
  out = _image(_saved(Image.fromarray(ramp, mode="F"), "TIFF"))[..., 0]
  expected = np.round(np.clip(ramp[0], 0, 1) * 255).astype(np.uint8)
  np.testing.assert_array_equal(out[0], expected)
  assert out[1, 0] == 0  # NaN
  assert out[0, 100] == 128  # 0.5


def test_palette_and_greyscale_alpha_and_transparency_composite_over_white():
  colours = np.array([[200, 50, 0], [0, 90, 220]], np.uint8)
  idx = np.array([[0, 1], [1, 0]], np.uint8)
  pal = Image.fromarray(idx, mode="P")
  pal.putpalette(colours.ravel().tolist() + [0] * (256 * 3 - 6))
  np.testing.assert_array_equal(_image(_saved(pal, "PNG")), colours[idx])
  np.testing.assert_array_equal(_image(_saved(pal, "PNG", transparency=1)),
                                np.where(idx[..., None] == 1, 255, colours[idx]))
  la = np.zeros((1, 3, 2), np.uint8)
  la[0, :, 0] = 100
  la[0, :, 1] = (0, 128, 255)  # clear, half, opaque
  out = _image(_saved(Image.fromarray(la, mode="LA"), "PNG"))
  assert out[0, 0].tolist() == [255] * 3 and out[0, 2].tolist() == [100] * 3
  assert abs(int(out[0, 1, 0]) - round((100 * 128 + 255 * 127) / 255)) <= 1


def test_cmyk_jpeg_comes_back_close_to_the_rgb_original():
  rgb = np.zeros((16, 48, 3), np.uint8)
  rgb[:, :16] = (200, 40, 30)
  rgb[:, 16:32] = (30, 160, 70)
  rgb[:, 32:] = (240, 230, 210)
  data = _saved(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
  assert Image.open(io.BytesIO(data)).mode == "CMYK"
  out = _image(data).astype(int)
  assert np.abs(out[4:12, 4:12] - rgb[4:12, 4:12]).max() <= 8
  assert np.abs(out[4:12, 36:44] - rgb[4:12, 36:44]).max() <= 8


@pytest.mark.parametrize("orientation,turn", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_turns_the_picture_upright(orientation, turn):
  stored = np.zeros((20, 40, 3), np.uint8)
  stored[:5, :5] = (255, 0, 0)  # a red top-left corner in storage order
  stored[-5:, 10:20] = (0, 0, 255)
  exif = Image.Exif()
  exif[0x0112] = orientation
  data = _saved(Image.fromarray(stored), "PNG", exif=exif.tobytes())
  expected = np.rot90(stored, k=turn)  # 6 = shown turned 90° clockwise, 8 counter-clockwise
  np.testing.assert_array_equal(_image(data), expected)
  sizes = []
  decode.decode_image({"kind": "image", "bytes": data}, lambda h, w: sizes.append((h, w)) or (h, w))
  assert sizes == [expected.shape[:2]]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_cached_decode_is_the_fresh_decode_and_the_cache_stays_in_its_bound(fmt):
  rng = np.random.default_rng(0)
  exif = Image.Exif()
  exif[0x0112] = 6  # stored sideways: the cache must hold the upright picture and header size
  files = [_saved(Image.fromarray(rng.integers(0, 255, (60, 90, 3), np.uint8)), fmt,
                  exif=exif.tobytes()) for _ in range(3)]
  one = 90 * 60 * 3
  cache = decoded_cache.DecodedCache(2 * one)  # room for two full-size pictures

  def read(data, cache):
    sizes = []
    img = decode.decode_image({"kind": "image", "bytes": data},
                              lambda h, w: sizes.append((h, w)) or (h, w), cache)
    return np.asarray(img), sizes

  for data in files + files[1:]:  # the last two reads find files 1 and 2
    got, sizes = read(data, cache)
    want, want_sizes = read(data, None)
    np.testing.assert_array_equal(got, want)
    assert sizes == want_sizes == [(90, 60)]
  assert (cache.hits, cache.misses) == (2, 3)
  assert len(cache) == 2  # file 0 was evicted
  read(files[0], cache)
  assert cache.misses == 4
  copy = pickle.loads(pickle.dumps(cache))  # what a new worker process receives
  assert len(copy) == 0 and copy.max_bytes == cache.max_bytes


def _animation(fmt: str, levels, durations_ms) -> bytes:
  frames = [Image.fromarray(np.full((8, 12, 3), v, np.uint8)) for v in levels]
  kwargs = {"lossless": True} if fmt == "WEBP" else {}
  return _saved(frames[0], fmt, save_all=True, append_images=frames[1:],
                duration=list(durations_ms), loop=0, **kwargs)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_gif_and_webp_are_videos_on_their_frame_times(tmp_path, fmt):
  levels, durations = (0, 60, 120, 180, 240), (100, 100, 300, 100, 200)
  data = _animation(fmt, levels, durations)
  seen = []
  frames, fps = decode.video_frames({"kind": "video", "bytes": data},
                                    lambda n, f: seen.append((n, f)) or range(n))
  assert seen == [(8, 10.0)]  # 100 ms ticks over 800 ms
  means = [int(round(f.mean())) for f in frames]
  assert means == [0, 60, 120, 120, 120, 180, 240, 240]  # 300 ms frame held for 3 ticks
  assert frames[0].shape == (8, 12, 3)
  path = tmp_path / f"anim.{fmt.lower()}"
  path.write_bytes(data)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"still.{fmt.lower()}")
  found = folder_source.scan_folder(str(tmp_path))
  assert found["video"] == [path.name] and found["image"] == [f"still.{fmt.lower()}"]
  assert decode.read_media_file(str(path)).shape == (8, 8, 12, 3)


def _vfr_mp4(times_s, levels, size=32) -> bytes:
  import av
  buf = io.BytesIO()
  with av.open(buf, mode="w", format="mp4") as container:
    stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                  rate=30)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    for t, v in zip(times_s, levels):
      frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), v, np.uint8), format="rgb24")
      frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return buf.getvalue()


def test_variable_frame_rate_video_is_sampled_by_time_at_the_configured_fps():
  # 1 s at 30 fps, then 1 s at 5 fps; each frame's grey level is 100 * its time.
  times = np.concatenate([np.arange(30) / 30, 1.0 + np.arange(5) / 5])
  levels = np.round(times * 100).astype(np.uint8)
  data = _vfr_mp4(times, levels)
  chosen = {}

  def choose(total, fps):
    chosen.update(total=total, fps=fps)
    return transforms.fps_frame_indices(total, fps, 10.0, 64)

  frames, _ = decode.video_frames({"kind": "video", "bytes": data}, choose)
  assert len(frames) == 16  # 2 s at 10 fps, cut to a multiple of 4
  half_tick = 0.5 / chosen["fps"]
  for k, frame in enumerate(frames):
    t = k / 10
    # frames on screen within half a timeline tick of t (their start times)
    lo = np.searchsorted(times, t - half_tick - 1e-6, side="right") - 1
    hi = np.searchsorted(times, t + half_tick + 1e-6, side="right") - 1
    allowed = levels[max(lo, 0):hi + 1].astype(int)
    assert np.abs(allowed - frame.mean()).min() <= 3, (k, frame.mean(), allowed)


def test_constant_rate_video_ticks_are_its_frames():
  times = np.arange(12) / 8
  levels = (np.arange(12) * 20).astype(np.uint8)
  frames, fps = decode.video_frames({"kind": "video", "bytes": _vfr_mp4(times, levels)},
                                    lambda n, f: range(n))
  assert fps == pytest.approx(8.0, rel=0.02) and len(frames) == 12
  np.testing.assert_allclose([f.mean() for f in frames], levels, atol=3)


def test_a_truncated_video_is_bad_data():
  times = np.arange(40) / 10
  data = _vfr_mp4(times, (np.arange(40) * 6).astype(np.uint8), size=64)
  with pytest.raises(decode.BadData):
    decode.video_frames({"kind": "video", "bytes": data[:len(data) * 2 // 3]},
                        lambda n, f: [n - 1])


def _tree_with_links(root):
  real = root / "real"
  (real / "sub").mkdir(parents=True)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(real / "a.png")
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(real / "sub" / "b.png")
  outside = root.parent / (root.name + "_outside")
  outside.mkdir()
  Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(outside / "c.png")
  os.symlink(outside, real / "linked")         # a symlinked folder outside the tree
  os.symlink(real, real / "sub" / "loop")      # points back at an ancestor
  return real


def test_symlinked_folders_are_followed_and_loops_reported(tmp_path):
  real = _tree_with_links(tmp_path / "tree")
  problems = []
  found = folder_source.scan_folder(str(real), problems)
  assert found["image"] == ["a.png", os.path.join("linked", "c.png"),
                            os.path.join("sub", "b.png")]
  assert problems == [{"file": os.path.join("sub", "loop"), "reason": "symlink_loop",
                       "message": "links back to its ancestor '.'; not followed"}]


def test_prepare_reads_symlinked_folders_and_lists_the_loop(tmp_path):
  real = _tree_with_links(tmp_path / "tree")
  manifest = prepare.prepare(str(real), str(tmp_path / "out"), progress=False)
  assert manifest["counts"] == {"image": 3}
  assert [s["reason"] for s in manifest["skipped"]] == ["symlink_loop"]
  assert "symlink_loop=1" in prepare.summary(manifest)


def test_tokenize_reads_files_through_the_same_decoder(tmp_path):
  from atoken_jax import tokenize_cli
  ramp = np.linspace(0, 65535, 64).round().astype(np.uint16)[None].repeat(16, 0)
  Image.fromarray(ramp).save(tmp_path / "deep.png")
  pixels = tokenize_cli.read_media(str(tmp_path / "deep.png"))
  assert pixels.shape == (16, 64, 3) and pixels.dtype == np.float32
  assert pixels.min() == -1.0 and pixels.max() == 1.0 and (np.diff(pixels[0, :, 0]) > 0).all()
  (tmp_path / "notes.txt").write_text("x")
  for name, message in (("notes.txt", "unsupported file type"), ("gone.png", "no such file")):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
      tokenize_cli.read_media(str(tmp_path / name))


def _png16_rgb(px: np.ndarray) -> bytes:
  """A 16-bit RGB PNG written by hand (Pillow writes 16 bits for greyscale only)."""
  import struct
  import zlib

  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

  h, w = px.shape[:2]
  rows = b"".join(b"\x00" + px[r].astype(">u2").tobytes() for r in range(h))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_rgb_png_and_tiff_and_float_rgb_tiff_map_to_8_bit():
  import tifffile
  px = np.array([[[0, 25700, 65535], [40000, 1, 12345]]], np.uint16)
  expected = np.round(px / 257.0).astype(np.uint8)
  np.testing.assert_array_equal(_image(_png16_rgb(px)), expected)
  buf = io.BytesIO()
  tifffile.imwrite(buf, px, photometric="rgb")
  np.testing.assert_array_equal(_image(buf.getvalue()), expected)
  unit = np.array([[[0.0, 0.5, 1.0], [0.25, 2.0, -1.0]]], np.float32)
  buf = io.BytesIO()
  tifffile.imwrite(buf, unit, photometric="rgb")
  np.testing.assert_array_equal(_image(buf.getvalue()), [[[0, 128, 255], [64, 255, 0]]])


def test_a_second_link_to_a_folder_reads_it_once_and_an_unlistable_folder_is_reported(
    tmp_path):
  real = _tree_with_links(tmp_path / "tree")
  os.symlink(real / "linked", real / "again")
  locked = real / "locked"
  locked.mkdir()
  os.chmod(locked, 0)
  try:
    problems = []
    found = folder_source.scan_folder(str(real), problems)
  finally:
    os.chmod(locked, 0o755)
  assert found["image"] == ["a.png", os.path.join("again", "c.png"),
                            os.path.join("sub", "b.png")]
  reasons = {p["file"]: p["reason"] for p in problems}
  assert reasons["linked"] == "duplicate_folder"
  assert reasons[os.path.join("sub", "loop")] == "symlink_loop"
  if os.geteuid() != 0:  # root lists any folder
    assert reasons["locked"] == "unreadable_folder"
