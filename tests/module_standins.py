"""Stand-in modules placed in sys.modules only while a reference package is built (e.g. the
parts of `torchvision` that `lpips` and `pytorch_fid` import, which cannot be installed here)."""
import contextlib
import importlib.machinery
import sys
import types


@contextlib.contextmanager
def standin_modules(*names: str, forget_prefixes: tuple[str, ...] = ()):
  """Yields {name: empty module} installed in sys.modules; restores the previous entries after,
  and drops modules starting with `forget_prefixes` (built on the stand-ins)."""
  saved = {k: sys.modules.get(k) for k in names}
  mods = {k: types.ModuleType(k) for k in names}
  for k, m in mods.items():
    m.__spec__ = importlib.machinery.ModuleSpec(k, None)
  sys.modules.update(mods)
  try:
    yield mods
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v
    for k in [k for k in sys.modules if forget_prefixes and k.startswith(forget_prefixes)]:
      sys.modules.pop(k)
