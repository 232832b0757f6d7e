"""Test setup: 8 fake CPU devices (sharding tests), float32 everywhere, a shared compile cache."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  pylint: disable=wrong-import-position

jax.config.update("jax_default_matmul_precision", "highest")
# Tests compile the same tiny models many times over: share compiled executables between them.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
