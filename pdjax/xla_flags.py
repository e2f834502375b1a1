"""XLA:CPU settings pdjax applies before JAX starts its backends.

On XLA:CPU (jax 0.10) leaving YNNPACK to matmuls only makes VGG train and eval steps 3-10%
faster than XLA's default fusions, and single 3x3 convolutions on 32x32 and 16x16 maps up to
2.3x faster (benchmarks/README.md). `apply()` adds `--xla_cpu_experimental_ynn_fusion_type=dot` to `XLA_FLAGS` unless the
user set that flag already or set `PDJAX_XLA_DEFAULTS=0`. It only affects CPU compilation and
only takes effect if it runs before JAX's first computation, which `import pdjax` does when
imported before any JAX work.
"""

from __future__ import annotations

import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=dot",)


def apply() -> None:
    if os.environ.get("PDJAX_XLA_DEFAULTS", "1") == "0":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in CPU_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags
