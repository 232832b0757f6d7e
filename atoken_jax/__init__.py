"""atoken-jax: train, evaluate, run and export AToken-style unified visual tokenizers.

  import atoken_jax as aj
  tok = aj.Tokenizer.from_ml_atoken("atoken-soc.safetensors", "atoken-soc.yaml")
  enc = tok.encode([image_hw3, video_thw3, aj.Voxels(coords_xyz, feats768)])
  rec = tok.decode(enc)
  gdec = aj.GaussianDecoder.from_ml_atoken("3d_decode_gs.safetensors", "3d_decode_gs.yaml")
"""
from atoken_jax import metrics, perceptual, render
from atoken_jax.config import ModelConfig, TrunkConfig, model_config
from atoken_jax.gaussian_decoder import GaussianDecoder
from atoken_jax.tokenizer import Encoding, Reconstruction, Tokenizer
from atoken_jax.tokens import TokenSeq, Voxels

__all__ = ["ModelConfig", "TrunkConfig", "model_config", "Tokenizer", "Encoding",
           "Reconstruction", "Voxels", "TokenSeq", "GaussianDecoder", "metrics", "perceptual",
           "render"]
__version__ = "0.1.0"
