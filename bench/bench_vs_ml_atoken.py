"""Our `Tokenizer` and train step against Apple's released PyTorch code (apple/ml-atoken), same
weights, same inputs, same machine.

  git --git-dir=<ml-atoken mirror> archive HEAD atoken_inference configs | tar x -C /tmp/mla
  python bench/bench_vs_ml_atoken.py --ml-atoken /tmp/mla           # inference + train, base

Apple's code is read from the folder given by --ml-atoken (never copied into this repo); it needs
torch, einops, diffusers, transformers, safetensors, pyyaml, webdataset, decord, ftfy, regex,
imageio (`pip install -e .[bench]`). On CPU, flash-attn (which its attention modules import) is
replaced by `_FlashAttnStandIn`: per-segment softmax attention over `cu_seqlens`, PyTorch SDPA
(or an explicit softmax where a softcap applies).

Inference: real photos (skimage) resized to mixed sizes and procedural clips (camera moves over
them, as the bundled dataset makes them); encode (posterior mean) + decode, one sample per call
and all in one call. Ours is the user path (`Tokenizer.encode` + `decode`, host tokenisation and
packing included); theirs is `ATokenWrapper.image_video_to_sparse_tensor` + `encode` +
`decode(training=False)`.

Timing: this box's speed drifts by up to 2x within minutes, so the two sides run interleaved,
one call each per round (--repeats rounds of inference, --train-steps rounds of train steps,
after a warm-up call each that compiles ours; the order flips every round). The table gives each
side's median tokens/s and ours / theirs per round (their time over ours in the same round):
the median and the range.

The max |Δ| column compares the two reconstructions (same weights, float32) on the values each
keeps: all 4 frames of a clip, frame 0 of an image (ml-atoken decodes frames 1-3 of an image
and discards them; we do not compute them): a check that both did the same computation.

Train step: rows of 16 and of 64 images of 128^2 (1,024 and 4,096 tokens), L1 + KL, AdamW,
float32. Ours: `bench_train_step.Step` (the real trainer's step, the preset's remat policy
unless --remat says otherwise: "dots" recomputes what the PyTorch loop keeps). Theirs:
a plain PyTorch loop (autograd, AdamW, grad-norm clip 1.0) around their `AutoencoderKL`.

The physical limit: each row's analytic FLOPs (`ModelConfig.flops_per_token`, 3x forward for
a train step) at this machine's float32 matmul rate, measured in the same run (the model's MLP
matmuls, the faster of XLA and torch). Ours / theirs can exceed 1 only by the share of that
limit their code leaves unused.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import machine  # noqa: E402

PHOTOS = (("astronaut", (256, 256)), ("coffee", (160, 240)), ("chelsea", (144, 224)),
          ("rocket", (128, 192)))
CLIPS = (("coffee", 8, (96, 128)), ("chelsea", 8, (112, 160)))


# --------------------------------------------------------------------------- Apple's code


class _FlashAttnStandIn(types.ModuleType):
  """`flash_attn`'s varlen entry points as exact per-segment softmax attention (CPU)."""

  def __init__(self):
    super().__init__("flash_attn")

  @staticmethod
  def _segments(q, k, v, cu_q, cu_k, softmax_scale=None, causal=False, softcap=0.0):
    import torch  # pylint: disable=import-outside-toplevel
    import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
    scale = softmax_scale or q.shape[-1] ** -0.5
    cq, ck = cu_q.tolist(), cu_k.tolist()
    outs = []
    for i in range(len(cq) - 1):
      qs, ks, vs = (a[s:e].transpose(0, 1) for a, s, e in
                    ((q, cq[i], cq[i + 1]), (k, ck[i], ck[i + 1]), (v, ck[i], ck[i + 1])))
      if softcap or (causal and qs.shape[1] != ks.shape[1]):
        s = torch.matmul(qs, ks.transpose(-1, -2)) * scale
        if softcap:
          s = softcap * torch.tanh(s / softcap)
        if causal:  # flash-attn aligns the causal mask to the bottom right
          nq, nk = qs.shape[1], ks.shape[1]
          s = s.masked_fill(torch.ones(nq, nk, dtype=torch.bool).triu(nk - nq + 1), -torch.inf)
        o = torch.matmul(torch.softmax(s, dim=-1), vs)
      else:
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale)
      outs.append(o.transpose(0, 1))
    return torch.cat(outs)

  def flash_attn_varlen_func(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None,
                             max_seqlen_k=None, dropout_p=0.0, softmax_scale=None, causal=False,
                             softcap=0.0, **_):
    return self._segments(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale, causal, softcap)

  def flash_attn_varlen_kvpacked_func(self, q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None,
                                      max_seqlen_k=None, dropout_p=0.0, softmax_scale=None,
                                      causal=False, softcap=0.0, **_):
    return self._segments(q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k, softmax_scale,
                          causal, softcap)

  def flash_attn_varlen_qkvpacked_func(self, qkv, cu_seqlens, max_seqlen=None, dropout_p=0.0,
                                       softmax_scale=None, causal=False, softcap=0.0, **_):
    return self._segments(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, cu_seqlens,
                          softmax_scale, causal, softcap)

  def flash_attn_qkvpacked_func(self, qkv, dropout_p=0.0, softmax_scale=None, causal=False,
                                softcap=0.0, **_):
    import torch  # pylint: disable=import-outside-toplevel
    b, n = qkv.shape[:2]
    cu = torch.arange(0, (b + 1) * n, n)
    out = self.flash_attn_varlen_qkvpacked_func(qkv.flatten(0, 1), cu, n, 0.0, softmax_scale,
                                                causal, softcap)
    return out.reshape(b, n, *out.shape[1:])


def import_ml_atoken(folder: str) -> types.SimpleNamespace:
  """Apple's modules from `folder` (holding atoken_inference/), ready to run on this CPU."""
  if not os.path.isdir(os.path.join(folder, "atoken_inference")):
    raise SystemExit(f"error: {folder} has no atoken_inference/ (see this script's docstring)")
  # diffusers (and transformers, which it pulls in) probe for flash_attn with find_spec when
  # imported: import the modules Apple's code uses before registering the stand-in.
  import importlib  # pylint: disable=import-outside-toplevel
  for name in ("diffusers.configuration_utils", "diffusers.loaders.single_file_model",
               "diffusers.utils.accelerate_utils", "diffusers.models.modeling_outputs",
               "diffusers.models.modeling_utils", "diffusers.models.autoencoders.vae",
               "diffusers.utils.torch_utils"):
    importlib.import_module(name)
  sys.modules["flash_attn"] = _FlashAttnStandIn()
  try:
    import decord  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:  # only data_utils' video reader uses it; the autoencoder does not
    sys.modules["decord"] = types.ModuleType("decord")
  # The Gaussian-splat decoder needs TRELLIS files (its install_gs.sh) and torchmetrics; the
  # autoencoder does not use it, and the wrapper builds it only when given its config.
  gs = types.ModuleType("atoken_inference.model.decoder_gs")

  class SLatGaussianDecoderTrain:  # pylint: disable=too-few-public-methods
    def __init__(self, *a, **k):
      raise RuntimeError("the Gaussian decoder is not available in this benchmark")

  gs.SLatGaussianDecoderTrain = SLatGaussianDecoderTrain
  sys.modules["atoken_inference.model.decoder_gs"] = gs
  sys.path.insert(0, os.path.abspath(folder))
  from atoken_inference.atoken_wrapper import ATokenWrapper  # pylint: disable=import-outside-toplevel
  from atoken_inference.model.basic import SparseTensor  # pylint: disable=import-outside-toplevel
  from atoken_inference.model.utils import DiagonalGaussianDistribution  # pylint: disable=import-outside-toplevel
  return types.SimpleNamespace(ATokenWrapper=ATokenWrapper, SparseTensor=SparseTensor,
                               DiagonalGaussianDistribution=DiagonalGaussianDistribution)


# --------------------------------------------------------------------------- inputs, weights


def sample_inputs() -> list[np.ndarray]:
  """Photos [H, W, 3] and clips [T, H, W, 3], float32 in [-1, 1], mixed sizes."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from data_pipelines import default_data  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  out = []
  for name, (h, w) in PHOTOS:
    photo = Image.fromarray(default_data._photo(name))  # pylint: disable=protected-access
    out.append(np.asarray(photo.resize((w, h), Image.BICUBIC)))
  for name, frames, hw in CLIPS:
    out.append(default_data._camera_path(default_data._photo(name), rng, frames, hw))  # pylint: disable=protected-access
  return [x.astype(np.float32) / 127.5 - 1.0 for x in out]


def export_weights(tok, folder: str) -> tuple[str, str]:
  """Our parameters as ml-atoken's .safetensors + YAML (what their wrapper loads, strict)."""
  import yaml  # pylint: disable=import-outside-toplevel
  from atoken_jax.interop import ml_atoken  # pylint: disable=import-outside-toplevel
  weights, cfg_path = os.path.join(folder, "model.safetensors"), os.path.join(folder, "model.yaml")
  tok.export_ml_atoken(weights)
  with open(cfg_path, "w") as f:
    yaml.safe_dump({"model": {"model_cfg": {"arch_cfg": ml_atoken.arch_cfg_from_config(tok.cfg)}}},
                   f)
  return weights, cfg_path


# --------------------------------------------------------------------------- the machine's limit


def gemm_rate(width: int, mlp_dim: int, rows: int, repeats: int = 5) -> dict[str, float]:
  """float32 FLOP/s of the model's MLP matmuls ([rows, width] x [width, mlp_dim] and back) on
  this machine, best of `repeats`, for XLA and for torch: the physical limit both sides share."""
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  shapes = ((rows, width, mlp_dim), (rows, mlp_dim, width))
  ab = [(rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32))
        for m, k, n in shapes]
  flops = sum(2 * m * k * n for m, k, n in shapes)
  dot = jax.jit(lambda x, y: x @ y)
  on_xla = [(jax.device_put(a), jax.device_put(b)) for a, b in ab]
  on_torch = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in ab]
  times = interleaved({"xla": lambda: [dot(a, b).block_until_ready() for a, b in on_xla],
                       "torch": torch.no_grad()(lambda: [a @ b for a, b in on_torch])}, repeats)
  return {name: flops / t.min() for name, t in times.items()}


def inference_flops(cfg, inputs) -> float:
  """Encode + decode forward FLOPs of `inputs`, each sample attending within itself."""
  from atoken_jax import tokens  # pylint: disable=import-outside-toplevel
  total = 0.0
  for x in inputs:
    seq = tokens.to_tokens(x)
    width = tokens.real_width(seq.kind)  # a single-frame sample needs frame 0 only
    total += len(seq) * cfg.flops_per_token(seq_len=len(seq), patch_dim=width)
  return total


# --------------------------------------------------------------------------- inference


def interleaved(fns: dict, rounds: int) -> dict[str, np.ndarray]:
  """Seconds of each call of each fn over `rounds` rounds, every fn once per round (after one
  warm-up call each, which compiles ours), the order reversed every other round. This box's
  speed drifts by up to 2x within minutes, so only calls made side by side are compared."""
  names = list(fns)
  for name in names:
    fns[name]()
  times = {name: [] for name in names}
  for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      t0 = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - t0)
  return {name: np.asarray(t) for name, t in times.items()}


def row(what: str, tokens: int, times: dict[str, np.ndarray], flops: float, diff=None) -> dict:
  """A table row: median tokens/s of each side, and ours / theirs per round (their time over
  ours in the same round): median and range."""
  ratio = times["theirs"] / times["ours"]
  return dict(what=what, tokens=tokens, ours=tokens / np.median(times["ours"]),
              theirs=tokens / np.median(times["theirs"]), ratio=float(np.median(ratio)),
              ratio_range=(float(ratio.min()), float(ratio.max())), rounds=len(ratio),
              diff=diff, flops=flops)


def inference(tok, mla, weights, cfg_path, inputs, repeats: int, device: str = "cpu"
              ) -> list[dict]:
  import torch  # pylint: disable=import-outside-toplevel
  wrapper = mla.ATokenWrapper(cfg_path, weights).eval().to(device)
  sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
  latent_dim = tok.cfg.latent_dim

  def ours(xs):
    rec = tok.decode(tok.encode(xs, posterior="mean"))
    return [rec[i] for i in range(len(xs))]

  def theirs(xs):
    with torch.no_grad():
      x = wrapper.image_video_to_sparse_tensor([torch.from_numpy(a).to(device) for a in xs])
      z, _, _ = wrapper.encode(x, normalize=True)
      rec = wrapper.decode(z.replace(z.feats[:, :latent_dim].contiguous()), training=False).sample
      sync()
      b = rec.coords[:, 0]
      return [rec.feats[b == i].cpu().numpy() for i in range(len(xs))]

  from atoken_jax import tokens  # pylint: disable=import-outside-toplevel
  n_tokens = sum(len(tokens.to_tokens(x)) for x in inputs)
  def kept(x, rec):  # what each side keeps: an image's frames 1-3 are padding
    return rec if np.ndim(x) == 4 else rec[:, :768]
  diff = max(float(np.abs(kept(x, a) - kept(x, b)).max())
             for x, a, b in zip(inputs, ours(inputs), theirs(inputs)))
  rows = []
  for mode, calls in (("one sample per call", [[x] for x in inputs]), ("one batch", [inputs])):
    times = interleaved({"ours": lambda c=calls: [ours(xs) for xs in c],
                         "theirs": lambda c=calls: [theirs(xs) for xs in c]}, repeats)
    rows.append(row(f"encode+decode, {mode}", n_tokens, times, inference_flops(tok.cfg, inputs),
                    diff))
  return rows


# --------------------------------------------------------------------------- train step


def their_train_step(mla, weights, cfg_path, batch, kl_weight: float, rec_weight: float,
                     device: str = "cpu"):
  """A plain PyTorch loop's step around their model: one L1 + KL step with AdamW, synced."""
  import torch  # pylint: disable=import-outside-toplevel
  from atoken_jax import tokens  # pylint: disable=import-outside-toplevel
  model = mla.ATokenWrapper(cfg_path, weights).model.train().to(device)
  sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
  real = batch.segment_ids > 0
  # ml-atoken reads 3072-wide patches; our image batch carries frame 0 (frames 1-3 are zero)
  feats = torch.from_numpy(tokens.full_width(batch.patches[real]))
  b = (batch.segment_ids[real] - 1).astype(np.int32)  # one sample per segment (images)
  coords = np.concatenate([b[:, None], batch.coords[real]], 1)
  x = mla.SparseTensor(feats=feats.to(device), coords=torch.from_numpy(coords).int().to(device))
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

  def step():
    z, _, _ = model.encode(x, normalize=True)
    post = mla.DiagonalGaussianDistribution(z)
    rec = model.decode(z.replace(post.sample()), training=True).sample
    l1 = (rec.feats - x.feats).abs().mean()
    kl = 0.5 * (post.mean ** 2 + post.var - 1.0 - post.logvar).sum(-1).mean()
    loss = rec_weight * l1 + kl_weight * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sync()
  return step


def train(preset: str, mla, weights, cfg_path, steps: int, images_per_row: tuple[int, ...],
          device: str = "cpu", remat: str | None = None) -> list[dict]:
  import jax  # pylint: disable=import-outside-toplevel
  import bench_train_step  # pylint: disable=import-outside-toplevel
  from atoken_jax import attention_blocks  # pylint: disable=import-outside-toplevel
  from atoken_jax.train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from experiments import stage1_image  # pylint: disable=import-outside-toplevel
  loss = stage1_image.get_config(preset).loss
  rows = []
  for per_row in images_per_row:
    batch = bench_train_step.grid_batch(1, 64 * per_row, 128)
    ours = bench_train_step.Step(preset, batch, dtype="float32", remat=remat)
    theirs = their_train_step(mla, weights, cfg_path, batch, float(loss.kl),
                              float(loss.rec) * float(loss.l1), device)
    times = interleaved({"ours": lambda s=ours: jax.block_until_ready(s()), "theirs": theirs},
                        steps)
    tokens = int((batch.segment_ids > 0).sum())
    model_cfg = ours.task.model_cfg
    rows.append(row(f"train step, {per_row} x 128^2 images in one row (remat {model_cfg.remat})",
                    tokens, times,
                    metrics_lib.train_flops(model_cfg, tokens,
                                            attention_blocks.pairs_needed(batch.segment_ids),
                                            batch.patches.shape[-1])))
    del ours, theirs
  return rows


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--ml-atoken", required=True,
                 help="folder holding ml-atoken's atoken_inference/ (outside this repo)")
  p.add_argument("--preset", default="base")
  p.add_argument("--repeats", type=int, default=5, help="interleaved rounds of inference")
  p.add_argument("--train-steps", type=int, default=4, help="interleaved rounds of train steps")
  p.add_argument("--images-per-row", type=int, nargs="*", default=[16, 64])
  p.add_argument("--skip-inference", action="store_true")
  p.add_argument("--skip-train", action="store_true")
  p.add_argument("--torch-device", default="cpu", help="where their model runs: cpu or cuda")
  p.add_argument("--remat", default=None,
                 help="our train step's remat policy (default: the preset's config, 'dots' for "
                      "base; 'none' recomputes nothing, as the PyTorch loop does, and needs "
                      "several GiB more for 64 images)")
  a = p.parse_args(argv)
  mla = import_ml_atoken(a.ml_atoken)
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  import atoken_jax as aj  # pylint: disable=import-outside-toplevel
  print(machine.describe(f"jax {jax.__version__} ({jax.devices()[0].platform})",
                         f"torch {torch.__version__} ({torch.get_num_threads()} threads)"),
        flush=True)
  tok = aj.Tokenizer.init_random(a.preset, seed=0)
  trunk = tok.cfg.encoder
  rate = gemm_rate(trunk.width, trunk.mlp_dim, 1024)
  limit = max(rate.values())
  print(f"float32 matmul ([1024, {trunk.width}] x [{trunk.width}, {trunk.mlp_dim}] and back): "
        f"XLA {rate['xla'] / 1e9:.0f} GFLOP/s, torch {rate['torch'] / 1e9:.0f} GFLOP/s. "
        "'limit' = the rows' analytic FLOPs at the faster of the two: no code on this machine "
        "runs them faster, so limit / theirs bounds ours / theirs.")
  print(f"\n{a.preset} preset, float32 (rows print as they finish)")
  print("| what | real tokens | ours tokens/s | ml-atoken tokens/s | ours / theirs, median "
        "[range] of rounds | limit tokens/s | ours, theirs % of limit | max |Δ| |")
  print("|---|---|---|---|---|---|---|---|", flush=True)

  def show(rows):
    for r in rows:
      diff = "" if r["diff"] is None else f"{r['diff']:.1e}"
      at_limit = r["tokens"] / (r["flops"] / limit)
      print(f"| {r['what']} | {r['tokens']:,} | {r['ours']:,.0f} | {r['theirs']:,.0f} | "
            f"{r['ratio']:.2f} [{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}] of "
            f"{r['rounds']} | {at_limit:,.0f} | {r['ours'] / at_limit:.0%}, "
            f"{r['theirs'] / at_limit:.0%} | {diff} |", flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    weights, cfg_path = export_weights(tok, tmp)
    if not a.skip_inference:
      show(inference(tok, mla, weights, cfg_path, sample_inputs(), a.repeats, a.torch_device))
    if not a.skip_train:
      show(train(a.preset, mla, weights, cfg_path, a.train_steps, tuple(a.images_per_row),
                 a.torch_device, a.remat))
  print(f"load average at end {os.getloadavg()[0]:.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
