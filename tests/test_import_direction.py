"""Imports go one way: data pipeline -> token format, trainer -> model, and nothing back.

Read from the sources with `ast` (every import, also those inside functions), so a new import
in the wrong direction fails here before it can make a cycle."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The token format: what a batch is made of. data_pipelines may import these (and the two leaf
# helpers below) from atoken_jax, nothing else.
TOKEN_FORMAT = ("atoken_jax.tokens", "atoken_jax.packing", "atoken_jax.batch",
                "atoken_jax.config", "atoken_jax.attention_blocks", "atoken_jax.pos_interp",
                "atoken_jax.perceptual_canvas")
LEAF_HELPERS = ("atoken_jax.media", "atoken_jax.cli_errors")
# Where the batch is defined, moved and consumed: none of these needs the data pipeline.
BATCH_CORE = TOKEN_FORMAT + ("atoken_jax.model", "atoken_jax.tokenizer", "atoken_jax.sharding",
                             "atoken_jax.train.loop", "atoken_jax.train.step",
                             "atoken_jax.train.task", "atoken_jax.train.objective",
                             "atoken_jax.train.perceptual_inputs", "atoken_jax.train.metrics",
                             "atoken_jax.train.state", "atoken_jax.row_plan")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
  base = ROOT.joinpath(*name.split("."))
  return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: pathlib.Path) -> set[str]:
  """Every module `path` imports, anywhere in the file; `from a import b` counts as a.b when
  b is a module of this repository."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        out.add(full if _is_module(full) else node.module)
  return out


def _within(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def _sources(package: str):
  for path in sorted((ROOT / package).rglob("*.py")):
    yield _module_name(path), imports_of(path)


def _violations(modules, allowed):
  return sorted(f"{m} imports {i}" for m, imports in modules for i in imports
                if not allowed(m, i))


def test_the_import_scanner_sees_function_level_imports():
  got = imports_of(ROOT / "atoken_jax" / "train" / "tokenizer_task.py")
  assert "data_pipelines" in got  # default_iterators imports it inside the function
  assert "atoken_jax.model.atoken" in got and "atoken_jax.batch" in got


def test_data_pipelines_import_only_the_token_format_from_atoken_jax():
  allowed = lambda m, i: not _within(i, ("atoken_jax",)) or _within(i, TOKEN_FORMAT
                                                                     + LEAF_HELPERS)
  assert _violations(_sources("data_pipelines"), allowed) == []


@pytest.mark.parametrize("package", ["atoken_jax", "data_pipelines"])
def test_the_token_format_imports_nothing_above_it(package):
  inside = [(m, i) for m, i in _sources(package) if _within(m, TOKEN_FORMAT)]
  allowed = lambda m, i: not _within(i, ("atoken_jax", "data_pipelines")) or _within(
      i, TOKEN_FORMAT)
  assert _violations(inside, allowed) == []


def test_the_model_never_imports_the_trainer_the_tokenizer_or_the_data():
  model = [(m, i) for m, i in _sources("atoken_jax") if _within(m, ("atoken_jax.model",))]
  above = ("atoken_jax.train", "atoken_jax.tokenizer", "atoken_jax.gs3d", "atoken_jax.eval",
           "data_pipelines")
  assert model and _violations(model, lambda m, i: not _within(i, above)) == []


def test_the_batch_is_defined_moved_and_consumed_without_the_data_pipeline():
  core = [(m, i) for m, i in _sources("atoken_jax") if _within(m, BATCH_CORE)]
  assert len(core) > 20
  assert _violations(core, lambda m, i: not _within(i, ("data_pipelines",))) == []
  tokenizer = [(m, i) for m, i in core if m == "atoken_jax.tokenizer"]
  assert _violations(tokenizer, lambda m, i: not _within(i, ("atoken_jax.train",))) == []
