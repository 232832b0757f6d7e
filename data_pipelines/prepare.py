"""`atoken data prepare SRC DST`: a folder of images / videos / 3D assets -> ArrayRecord shards.

  atoken data prepare ~/photos ~/data/photos --workers 4

Every file of SRC (see `folder_source.scan_folder`) is checked and converted:
  images  -> the original file bytes, after a full decode succeeded;
  videos  -> the original file bytes, after PyAV decoded every frame and found >= 4;
  meshes and NeRF folders -> rendered (meshes) and voxelised here (spec §1.3), stored as voxel
             coords + nearest-view patch indices + PNG views + cameras.
Captions come from sidecar .txt files. Files that fail (and symlink loops) are skipped and
listed (reason, message) in the summary and in DST/manifest.json; nothing unreadable reaches
the shards.
Output: DST/image/, DST/video/, DST/voxels/ (part-NNNNN.array_record) and DST/manifest.json --
the layout `arrayrecord:DST` sources read. The dataset is built beside DST and appears only when
complete (`dataset_dir`): a killed run, with or without --overwrite, leaves DST as it was.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import sys
from typing import Optional

from atoken_jax import cli_errors
from data_pipelines import dataset_dir, decode, folder_source, writers


def _check_video(data: bytes) -> None:
  def choose(total, fps):
    del fps
    if total < 4:
      raise decode.BadData("too_few_frames", f"{total} frames (need 4)")
    return [0, total - 1]  # decoding up to the last frame checks the whole stream

  decode.video_frames({"kind": "video", "bytes": data}, choose)


def convert(root: str, rel: str, modality: str, num_views: int = 16, seed: int = 0
            ) -> tuple[str, str, Optional[bytes], Optional[str], str]:
  """One item -> (modality, name, record bytes or None, skip reason or None, message)."""
  record = folder_source.read_item(root, rel, modality)
  name = rel
  try:
    if record["kind"] == "error":
      raise decode.BadData("unreadable", record["error"])
    caption = record.get("caption")
    if modality == "image":
      decode.decode_image(record)
      out = writers.image_record(name, record["bytes"], caption)
    elif modality == "video":
      _check_video(record["bytes"])
      out = writers.video_record(name, record["bytes"], caption)
    else:
      asset = decode.voxel_asset(record, num_views, seed)
      out = writers.voxel_record(name, asset, caption)
  except decode.BadData as e:
    return modality, name, None, e.reason, e.message
  except Exception as e:  # noqa: BLE001 - one bad file must not stop a long conversion
    return modality, name, None, "decode_error", f"{type(e).__name__}: {e}"
  return modality, name, out, None, ""


def _convert_star(args):
  return convert(*args)


def prepare(src: str, dst: str, num_views: int = 16, workers: int = 0, seed: int = 0,
            shard_mb: int = 512, progress: bool = True, overwrite: bool = False) -> dict:
  """Converts folder `src` into the dataset `dst`; returns its manifest (also written to dst).

  Built beside dst and renamed into place when complete (`dataset_dir.DatasetBuilder`): an
  interrupted run leaves dst as it was. `overwrite` replaces an existing dataset. When no file
  is usable nothing is written (the returned manifest has empty counts).

  Raises:
    DatasetError: dst cannot take the dataset (a file, a dataset without `overwrite`, a folder
      holding other files).
  """
  with dataset_dir.DatasetBuilder(dst, overwrite) as builder:
    skipped: list = []
    found = folder_source.scan_folder(src, skipped)
    items = [(src, rel, m, num_views, seed) for m in ("image", "video", "voxels")
             for rel in found[m]]
    written: collections.Counter = collections.Counter()
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
      results = (pool.imap(_convert_star, items) if pool else map(_convert_star, items))
      for modality, name, record, reason, message in tqdm(
          results, total=len(items), desc="prepare", unit="file", disable=not progress):
        if record is None:
          skipped.append({"file": name, "reason": reason, "message": message[:300]})
        else:
          builder.shard_writer(modality, shard_mb << 20).write(record)
          written[modality] += 1
    finally:
      if pool is not None:
        pool.close()
        pool.join()
    manifest = {"source": os.path.abspath(src), "skipped": skipped, "num_views": num_views,
                "seed": seed}
    if not written:  # nothing usable: leave dst (and any dataset there) as it was
      return dict(manifest, counts={}, shards={})
    return builder.commit(manifest, dict(written))


def summary(manifest: dict, max_files: int = 20) -> str:
  """Human-readable summary: records written per modality, skipped files by reason."""
  counts = manifest["counts"]
  lines = ["written: " + (", ".join(f"{n} {m}" for m, n in counts.items()) or "nothing")]
  skipped = manifest["skipped"]
  if skipped:
    by_reason = collections.Counter(s["reason"] for s in skipped)
    lines.append(f"skipped {len(skipped)}: " + ", ".join(f"{r}={n}" for r, n in
                                                         by_reason.most_common()))
    lines += [f"  {s['file']}: {s['reason']} {s['message']}" for s in skipped[:max_files]]
    if len(skipped) > max_files:
      lines.append(f"  ... and {len(skipped) - max_files} more (see manifest.json)")
  else:
    lines.append("skipped: none")
  return "\n".join(lines)


def main(argv=None) -> int:
  """CLI entry: `atoken data prepare SRC DST [options]`; argv excludes the program name."""
  parser = cli_errors.ArgumentParser(prog="atoken data prepare", description=__doc__.split("\n")[0])
  parser.add_argument("src", help="folder of images, videos, meshes, NeRF render folders")
  parser.add_argument("dst", help="output directory (DST/<modality>/part-*.array_record)")
  parser.add_argument("--views", type=int, default=16, help="views rendered per mesh")
  parser.add_argument("--workers", type=int, default=0, help="conversion processes")
  parser.add_argument("--seed", type=int, default=0, help="seed of point subsampling")
  parser.add_argument("--shard-mb", type=int, default=512, help="start a new shard past this")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if not os.path.isdir(args.src):
    raise cli_errors.UsageError(f"{args.src} is not a folder")
  try:
    manifest = prepare(args.src, args.dst, args.views, args.workers, args.seed, args.shard_mb,
                       progress=not args.no_progress, overwrite=args.overwrite)
  except OSError as e:  # refused by the CLI's boundary in one line (`cli_errors`)
    raise cli_errors.UserError(f"cannot write {args.dst}: {e.strerror or e}") from None
  print(summary(manifest))
  if not manifest["counts"]:
    print(f"nothing usable in {args.src}: {args.dst} left as it was", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
