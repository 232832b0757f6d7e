"""atoken-jax: train, evaluate, run and export AToken-style unified visual tokenizers."""
from atoken_jax.config import ModelConfig, TrunkConfig, model_config
from atoken_jax.tokenizer import Encoding, Reconstruction, Tokenizer
from atoken_jax.tokens import TokenSeq, Voxels

__all__ = ["ModelConfig", "TrunkConfig", "model_config", "Tokenizer", "Encoding",
           "Reconstruction", "Voxels", "TokenSeq"]
__version__ = "0.1.0"
