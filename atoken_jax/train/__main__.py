"""python -m atoken_jax.train --config=... --workdir=...  (same as `atoken train`)."""
import sys

from atoken_jax.train import launch

if __name__ == "__main__":
  sys.exit(launch.train_main(sys.argv[1:]))
