"""XLA:CPU settings pdjax applies before JAX starts its backends.

On XLA:CPU (jax 0.10) the default YNNPACK fusions of elementwise and reduction ops made the
VGG train step 10-17% slower than leaving YNNPACK to matmuls only (benchmarks/README.md, "XLA
flags"). `apply()` adds `--xla_cpu_experimental_ynn_fusion_type=dot` to `XLA_FLAGS` unless the
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
