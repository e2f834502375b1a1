"""pdjax: prune, then distill, in JAX/Flax.

`import pdjax` gives the whole public API:
  pdjax.models     models of the paper, buildable at any widths (`get`, `init`)
  pdjax.data       data sources as uint8 arrays, on-device augmentation (`load`)
  pdjax.steps      the schedule, SGD, the train state, jitted train/eval steps over a mesh
  pdjax.train      the resumable `fit` loop: run directory, stop handling, progress record
  pdjax.masks      pruning masks as pytrees (`init`, `apply`, `prune_global`, `prune_layerwise`)
  pdjax.sparsity   the mask algebra: per-layer statistics, set operations, reports
  pdjax.pruning    iterative pruning with rewinding (`iterative_pruning`, `load_round`)
  pdjax.students   student widths from a pruned teacher's masks (`student_widths`)
  pdjax.distill    the KD loss (`kd_loss`) and `Teacher`; KD steps via `fit(..., teacher=...)`
  pdjax.designs    the experiment designs, each as config, run, results, report:
                   `designs.prune_distill` (the method, `prune_then_distill`), `designs.controls`
                   (pruned teachers against dense-rewinding and random-pruning controls,
                   `run_controls`), `designs.stage` (one stage, a teacher's pruning sequences)
  pdjax.stats      paired and two-level (teachers, seeds) comparisons, Holm's correction
  pdjax.artifacts  any finished stage back in one call (`load_stage`), export for serving (`export`)
  pdjax.parallel   the device mesh (`data_mesh`), sharding helpers, multi-host start-up
  pdjax.checkpoints  orbax checkpoints (`Checkpointer`)
  pdjax.paper      PAPER.md's training schedules
  pdjax.tensorboard  live training curves (`Writer`)
  pdjax.render     result tables, plots and results files
  pdjax.provenance what produced a stage (stage.json), checked when it resumes
  pdjax.costs      parameters, FLOPs and measured inference images/s of a model
The experiments' command line (`pdjax.cli`: `--set` overrides, run directories, reports,
presets) is not part of it: `import pdjax` does not load it, and no library module imports it.
"""

from pdjax import xla_flags as _xla_flags

_xla_flags.apply()  # before JAX's first computation; see pdjax/xla_flags.py

from pdjax import compilation as _compilation  # noqa: E402

_compilation.enable_cache()  # a persistent compilation cache; PDJAX_COMPILATION_CACHE=0 turns it off

from pdjax import (artifacts, checkpoints, costs, data, distill, masks, models, paper, parallel, provenance, pruning,
                   render, sparsity, stats, steps, students, tensorboard, train)
from pdjax import designs  # noqa: E402  (after the core library it is built on)
from pdjax.checkpoints import Checkpointer
from pdjax.data import DataError, ImageData, Split, load
from pdjax.models import count_params
from pdjax.parallel import data_mesh
from pdjax.steps import Schedule, TrainState, evaluate, make_eval_step, make_train_step, sgd
from pdjax.train import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "artifacts", "checkpoints", "costs", "data", "designs", "distill", "masks", "models", "paper", "parallel",
    "provenance", "pruning", "render", "sparsity", "stats", "steps", "students", "tensorboard", "train",
    "Checkpointer", "DataError", "ImageData", "Split", "load", "count_params", "data_mesh",
    "FitResult", "Schedule", "TrainState", "evaluate", "fit", "make_eval_step", "make_train_step",
    "sgd", "__version__",
]
