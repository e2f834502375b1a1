"""Experiment designs, each in the same rooms: `config` (what a run is made of, passed whole),
`run` (training it, resumable), `results` (typed records of what it produced) and `report`
(markdown, plots, the files a run writes).

  prune_distill  the paper's method: a teacher, its pruning rounds, students from scratch and
                 distilled from the unpruned and pruned teachers (`prune_then_distill`)
  controls       is it the pruning or the extra training? magnitude-pruned teachers against
                 dense-rewinding and random-pruning controls of the same training (`run_controls`)

Beside them: `stage` (one stage trained, a teacher's pruning sequences, the student seeds), which
both designs use, and `common` (the config fields every design shares, configs as JSON, the
data a run loads, the machine its results name). The core library (models, data, masks,
sparsity, students, distill, steps, train, pruning, parallel, checkpoints) imports none of it.
"""

from pdjax.designs import common, controls, prune_distill, stage

__all__ = ["common", "controls", "prune_distill", "stage"]
