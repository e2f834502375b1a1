"""Compilation: a persistent cache for every pdjax process, and cheap compiles for one-off code.

XLA compiles each step once per process; on a CPU that is most of a short run (a notebook fit
of a small VGG11: 13.7 s of overhead against 0.29 s per epoch, benchmarks/README.md). Two
remedies, both on by default:

- `enable_cache()`, called by `import pdjax`: compiled programs are kept on disk, in
  `~/.cache/pdjax/xla` (or `$XDG_CACHE_HOME/pdjax/xla`), and a second process that compiles the
  same program reads it back. `PDJAX_COMPILATION_CACHE=0` turns it off, `PDJAX_COMPILATION_CACHE=DIR`
  moves it; a cache directory the user already gave JAX (`JAX_COMPILATION_CACHE_DIR` or
  `jax.config.update("jax_compilation_cache_dir", ...)` before `import pdjax`) is kept as it is.
  It applies to every JAX program of the process, the user's own included, as JAX's cache does.
- `one_off(fn)`: `jax.jit` for a function run once (a model's initialisation, a cost analysis),
  compiled by XLA:CPU's backend at optimisation level 1 instead of 2 (a VGG19/16 init: 19 s ->
  4 s measured, with bit-identical values), or at the level `XLA_FLAGS` sets where that is lower
  (`--xla_backend_optimization_level=0`: then a plain `jax.jit` compiles at 0 too, and one_off
  computes what it does); on other backends it is plain `jax.jit`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import jax

ENV = "PDJAX_COMPILATION_CACHE"
# Programs that compile faster than this are not written to the cache (JAX's default is 1 s,
# which leaves out the evaluation steps: ~0.7 s each on 2 cores).
MIN_COMPILE_SECONDS = 0.2
# XLA:CPU backend level 1 computes the initial values level 2 computes, bit for bit (checked on a
# VGG19 and a ResNet18 by tests/helpers/user_xla_checks.py); level 0 does not.
ONE_OFF_OPTIONS = {"xla_backend_optimization_level": 1}
_LEVEL_FLAG = "--xla_backend_optimization_level"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pdjax" / "xla"


def enable_cache(path: str | Path | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache (see the module docstring).

    Args:
      path: the cache directory; default `$PDJAX_COMPILATION_CACHE`, else `default_cache_dir()`.

    Returns:
      The cache directory in use, or None when `PDJAX_COMPILATION_CACHE=0` turned it off.
    """
    setting = os.environ.get(ENV, "")
    if path is None and setting == "0":
        return None
    current = jax.config.jax_compilation_cache_dir
    if path is None and current is not None:
        return Path(current)  # the user's own choice
    directory = Path(path or setting or default_cache_dir()).expanduser()
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory


def one_off_options() -> dict[str, Any]:
    """The XLA:CPU compiler options of `one_off`: `ONE_OFF_OPTIONS`, never a higher backend level
    than the one this process's `XLA_FLAGS` asks for (a user compiling at level 0 to save time
    gets level 0 here too)."""
    level = ONE_OFF_OPTIONS["xla_backend_optimization_level"]
    for flag in os.environ.get("XLA_FLAGS", "").split():
        name, _, value = flag.partition("=")
        if name == _LEVEL_FLAG and value.isdigit():
            level = min(level, int(value))
    return {**ONE_OFF_OPTIONS, "xla_backend_optimization_level": level}


def one_off(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`jax.jit(fn)` compiled cheaply on the CPU backend (see the module docstring). Called
    inside another transformation (`jax.eval_shape`, an outer `jit`), where JAX takes no
    compiler options, it is plain `jax.jit(fn)`."""
    plain = jax.jit(fn)
    if jax.default_backend() != "cpu":
        return plain
    cheap = jax.jit(fn, compiler_options=one_off_options())

    def call(*args: Any) -> Any:
        try:
            return cheap(*args)
        except ValueError as err:  # traced by an outer transformation: no compiler options there
            if "compiler_options" not in str(err):
                raise
            return plain(*args)

    return call
