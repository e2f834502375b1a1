"""Iterative pruning with rewinding (PAPER.md, "Pruning"), and its two controls.

Each round prunes `fraction` of the still-unpruned prunable weights (globally by default), then
retrains under the new masks in `workdir/round_<k>/`. Which weights a round removes is the
`criterion`:
  - `magnitude` (the paper): the smallest |w|;
  - `random`: in every layer exactly as many as the magnitude round removes (or as a given
    `reference` sequence's round keeps), at random positions (`pdjax.masks.prune_random_like`):
    the layer-wise sparsity of magnitude pruning without its choice of weights;
  - `none`: nothing (dense rewinding): the teacher gets exactly the extra training of the
    pruning sequence, rounds, epochs and rewinding alike, and stays dense; its round k is "as
    much training as pruned round k, no sparsity".
After pruning, each round retrains:
  - `rewind="lr"` (the paper's learning-rate rewinding): keep the trained weights, reset the
    optimizer, run the full per-round schedule again from its start;
  - `rewind="weight"`: reset the surviving weights to `rewind_variables` (the dense network's
    weights at an early epoch, as in lottery-ticket work: `RewindPoint` keeps them while the
    dense network trains), then run the schedule;
  - `rewind="finetune"`: keep the weights and train at a small constant learning rate.
Every round's fit checkpoints each epoch (masks included) and keeps its last epoch, so a run
killed mid-round resumes in that round, and any round's teacher can be loaded afterwards.

Usage:
    spec = pdjax.pruning.PruneSpec(per_round, rounds=7)
    rounds = pdjax.pruning.iterative_pruning(model, data, spec, variables=teacher, workdir="runs/x/pruning")
    rounds[1].masks, rounds[1].variables     # the 36%-sparse teacher (round 2)
    dense = pdjax.pruning.iterative_pruning(model, data, dataclasses.replace(spec, criterion="none"), ...)
    random = pdjax.pruning.iterative_pruning(model, data, dataclasses.replace(spec, criterion="random"), ...,
                                             reference=[r.masks for r in rounds])
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
from flax import linen as nn
from jax.sharding import Mesh

from pdjax import data as data_lib
from pdjax import masks as masks_lib
from pdjax import parallel, provenance, sparsity
from pdjax import tensorboard as tensorboard_lib
from pdjax.checkpoints import load_tree, save_tree
from pdjax.files import write_json_atomic
from pdjax.steps import Schedule
from pdjax.train import FitResult, fit
from pdjax.types import Masks, Params, Variables, check

REWIND_MODES = ("lr", "weight", "finetune")
SCOPES = ("global", "layerwise")
CRITERIA = ("magnitude", "random", "none")


@dataclasses.dataclass(frozen=True)
class PruneSpec:
    """How a teacher is pruned (see `iterative_pruning`); each value is checked here, once.

    Attributes:
      schedule: each round's retraining schedule (None: not given yet, as in an experiment
        config whose arms each bring theirs; `iterative_pruning` needs one).
      rounds: number of rounds; round k leaves density (1 - fraction)^k.
      fraction: share of the still-kept weights a round removes, in [0, 1).
      scope: "global" (one ranking over the network) or "layerwise".
      rewind: "lr" (the paper), "weight" (to the teacher at `rewind_epoch`) or "finetune".
      rewind_epoch: the teacher epoch whose weights `rewind="weight"` restores.
      finetune_lr: the constant learning rate of `rewind="finetune"`.
      criterion: "magnitude" (the paper), "random" or "none" (the controls; module docstring).
    """

    schedule: Schedule | None = None
    rounds: int = 7
    fraction: float = 0.2
    scope: str = "global"
    rewind: str = "lr"
    rewind_epoch: int = 0
    finetune_lr: float = 1e-3
    criterion: str = "magnitude"

    def __post_init__(self) -> None:
        checks = [
            (self.rounds >= 0, f"rounds={self.rounds} must be >= 0"),
            (0.0 <= self.fraction < 1.0, f"fraction={self.fraction} must lie in [0, 1)"),
            (self.scope in SCOPES, f"scope={self.scope!r}: use one of {', '.join(SCOPES)}"),
            (self.rewind in REWIND_MODES, f"rewind={self.rewind!r}: use one of {', '.join(REWIND_MODES)}"),
            (self.rewind_epoch >= 0, f"rewind_epoch={self.rewind_epoch} must be >= 0"),
            (self.finetune_lr > 0, f"finetune_lr={self.finetune_lr} must be > 0"),
            (self.criterion in CRITERIA, f"criterion={self.criterion!r}: use one of {', '.join(CRITERIA)}"),
        ]
        check((ok, f"prune.{message}") for ok, message in checks)


@dataclasses.dataclass
class PruningRound:
    """One finished round: its masks, last-epoch variables and test accuracy."""

    round: int
    masks: Masks
    variables: Variables
    result: FitResult

    def summary(self) -> dict[str, Any]:
        s = sparsity.summary(self.masks)
        return {"round": self.round, "density": s["density"], "sparsity": s["sparsity"],
                "remaining": s["remaining"], **self.result.summary()}


class RewindPoint:
    """The dense network's weights at epoch `epoch` of its training: weight rewinding's target.

    Pass it to `pdjax.train.fit` as `on_variables`; it keeps that epoch's variables at `path`
    (saved with `pdjax.checkpoints.save_tree`, so a resumed or finished run still has them) or,
    with `path=None`, in memory. `variables(template)` gives them back.

        point = pdjax.pruning.RewindPoint(2, "runs/x/teacher/snapshot_2")
        teacher = pdjax.fit(model, data, schedule, workdir="runs/x/teacher", on_variables=point)
        rounds = pdjax.pruning.iterative_pruning(model, data, PruneSpec(per_round, rewind="weight"), ...,
                                                 rewind_variables=point.variables(teacher.variables))
    """

    def __init__(self, epoch: int, path: str | Path | None = None):
        if epoch < 0:
            raise ValueError(f"the rewind epoch must be >= 0, got {epoch}")
        self.epoch = epoch
        self.path = None if path is None else Path(path)
        self._kept: Variables | None = None

    def __call__(self, epoch: int, variables: Variables) -> None:
        if epoch != self.epoch:
            return
        if self.path is None:
            self._kept = jax.device_get(variables)
        else:
            save_tree(self.path, variables)

    def variables(self, template: Variables) -> Variables:
        """The kept variables (in `template`'s structure when read from `path`).

        Raises:
          FileNotFoundError: the training run never passed epoch `epoch` with this point (e.g. its
            directory was trained before, without it): restart that run to keep the point.
        """
        if self.path is None:
            if self._kept is None:
                raise FileNotFoundError(f"no variables kept for rewind epoch {self.epoch}: pass this "
                                        "RewindPoint to fit(on_variables=...) and train past that epoch")
            return self._kept
        if not self.path.exists():
            raise FileNotFoundError(f"no rewind point at {self.path}: the run was trained without keeping "
                                    f"epoch {self.epoch} (or has not reached it); {provenance.RESTART_HINT}")
        return load_tree(self.path, template)


def rounds_for_sparsity(target: float, fraction: float = 0.2) -> int:
    """Rounds of pruning `fraction` that reach `target` sparsity: 0.36 -> 2, 0.59 -> 4, 0.79 -> 7."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {target}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"pruning fraction must be in (0, 1), got {fraction}")
    return round(math.log(1.0 - target) / math.log(1.0 - fraction))


def round_dir(workdir: str | Path | None, k: int) -> Path | None:
    return None if workdir is None else Path(workdir) / f"round_{k:02d}"


def iterative_pruning(model: nn.Module, data: data_lib.ImageData, spec: PruneSpec, *, variables: Variables,
                      workdir: str | Path | None = None, rewind_variables: Variables | None = None,
                      masks: Masks | None = None, reference: Sequence[Masks] | None = None, seed: int = 0,
                      mesh: Mesh | None = None, augment: bool = True, eval_batch_size: int = 500,
                      progress: bool = True, restart: bool = False,
                      on_round_end: Callable[[PruningRound], None] | None = None,
                      on_epoch_end: Callable[[int, int, dict], None] | None = None,
                      tensorboard: str | Path | None = None, steps_per_dispatch: int = 1) -> list[PruningRound]:
    """Runs (or resumes) `spec.rounds` rounds of prune-then-retrain.

    Args:
      model: the teacher's module.
      data: the data set.
      spec: how to prune (`PruneSpec`, which checks its values): the per-round schedule
        (PAPER.md: 130 epochs, milestones 39, 84), the rounds (round k leaves density
        (1 - fraction)^k), the fraction, the scope (`global`: one ranking over the network, or
        `layerwise`), the rewinding (`lr`, `weight`, `finetune` with `finetune_lr`; see the
        module docstring) and the criterion (`magnitude`, `random`, `none`).
      variables: the trained dense (or already pruned) teacher's variables.
      workdir: directory for `round_<k>/`, `rounds.json` and `pruning.json` (what produced the
        rounds: resuming with another fraction, scope, rewind mode, seed or starting teacher is
        refused with `pdjax.provenance.StaleRunError`; more rounds than before is fine); None
        prunes in memory.
      rewind_variables: the weights to rewind to (required for `rewind="weight"`).
      masks: starting masks (default: nothing pruned).
      reference: `random` only: one mask tree per round (e.g. a magnitude sequence's
        `[r.masks for r in rounds]`); round k keeps, in every layer, exactly as many weights as
        `reference[k - 1]` does. Default: as many as magnitude pruning of this sequence's own
        weights would keep.
      seed: base seed; round k trains with seed + k, and a random round draws its positions
        from `numpy.random.default_rng((seed, k))`.
      mesh, augment, eval_batch_size, progress: as in `pdjax.train.fit`.
      restart: delete `workdir` first and prune from the start.
      on_round_end: called with each finished round.
      on_epoch_end: called with (round, epoch, metrics) after each epoch's checkpoint.
      tensorboard: a directory: each round's curves go to `tensorboard/round_<k>/`.
      steps_per_dispatch: train steps per compiled call in each round (`pdjax.train.fit`).

    Returns:
      One `PruningRound` per round, in order.
    """
    if spec.schedule is None:
        raise ValueError("the PruneSpec has no schedule: give each round's training schedule")
    rounds, criterion = spec.rounds, spec.criterion
    if reference is not None and criterion != "random":
        raise ValueError(f"reference masks only apply to criterion='random', not {criterion!r}")
    if reference is not None and len(reference) < rounds:
        raise ValueError(f"reference has {len(reference)} rounds of masks, {rounds} are asked for")
    if spec.rewind == "weight" and rewind_variables is None:
        raise ValueError("rewind='weight' needs rewind_variables (the weights to rewind to)")
    prune = masks_lib.prune_global if spec.scope == "global" else masks_lib.prune_layerwise
    schedule = spec.schedule
    if spec.rewind == "finetune":
        schedule = dataclasses.replace(schedule, lr=spec.finetune_lr, milestones=())
    current_masks = masks if masks is not None else masks_lib.init(variables["params"])
    masks_lib.check(variables["params"], current_masks)
    if workdir is not None:
        workdir = Path(workdir)
        if restart:
            parallel.remove_directory(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        record = {"fraction": spec.fraction, "scope": spec.scope, "rewind": spec.rewind,
                  "finetune_lr": spec.finetune_lr if spec.rewind == "finetune" else None, "seed": seed,
                  "variables": provenance.tree_digest(variables), "masks": provenance.tree_digest(current_masks),
                  "rewind_variables": provenance.tree_digest(rewind_variables), "criterion": criterion,
                  "reference": None if reference is None else [provenance.tree_digest(m) for m in reference[:rounds]]}
        provenance.check_or_write(workdir / "pruning.json", record, what=str(workdir),
                               write=parallel.is_main_process())
    current = variables
    out: list[PruningRound] = []
    for k in range(1, rounds + 1):
        # Deterministic from the previous round's last epoch, so a resumed run recomputes
        # exactly the masks its checkpoint holds.
        new_masks = prune_round(current["params"], current_masks, spec.fraction, criterion=criterion, prune=prune,
                                reference=None if reference is None else reference[k - 1], seed=(seed, k))
        start = rewind_variables if spec.rewind == "weight" else current
        result = fit(model, data, schedule, workdir=round_dir(workdir, k), seed=seed + k, mesh=mesh,
                     variables=start, masks=new_masks, augment=augment, select_best=False,
                     eval_batch_size=eval_batch_size, name=f"prune round {k}/{rounds}",
                     progress=progress, writer=tensorboard_lib.for_stage(tensorboard, f"round_{k:02d}"),
                     steps_per_dispatch=steps_per_dispatch,
                     on_epoch_end=(None if on_epoch_end is None
                                   else lambda epoch, record, k=k: on_epoch_end(k, epoch, record)))
        current, current_masks = result.variables, result.masks
        finished = PruningRound(k, current_masks, current, result)
        out.append(finished)
        if workdir is not None:
            teacher_path = round_dir(workdir, k) / "teacher"
            if not teacher_path.exists():
                save_tree(teacher_path, {"variables": current, "masks": current_masks})
            if parallel.is_main_process():
                write_json_atomic(workdir / "rounds.json", [r.summary() for r in out])
        if on_round_end is not None:
            on_round_end(finished)
    return out


def prune_round(params: Params, masks: Masks, fraction: float, *, criterion: str = "magnitude",
                prune: Callable[[Params, Masks, float], Masks] = masks_lib.prune_global,
                reference: Masks | None = None, seed: int | tuple[int, ...] = 0) -> Masks:
    """One round's new masks by `criterion` (see the module docstring).

    Args:
      params, masks: the current weights and masks.
      fraction: share of the still-kept weights that magnitude pruning removes.
      criterion: `magnitude`, `random` or `none` (returns `masks` unchanged).
      prune: the magnitude rule (`pdjax.masks.prune_global` or `prune_layerwise`).
      reference: `random` only: the masks whose per-layer counts to keep (default: the
        magnitude round's on these weights).
      seed: the random round's generator seed.
    """
    if criterion == "none":
        return masks
    if criterion == "magnitude":
        return prune(params, masks, fraction)
    if criterion == "random":
        counts = reference if reference is not None else prune(params, masks, fraction)
        return masks_lib.prune_random_like(masks, counts, seed)
    raise ValueError(f"unknown pruning criterion {criterion!r}; known: {', '.join(CRITERIA)}")


def load_round(workdir: str | Path, template: Variables, *, round: int | None = None,
               sparsity: float | None = None, fraction: float = 0.2) -> tuple[Variables, Masks]:
    """Loads a finished round's pruned teacher: (last-epoch variables, masks).

    Args:
      workdir: the `iterative_pruning` directory.
      template: variables of the same model (e.g. `pdjax.models.init(...)`), for shapes.
      round: the round number; or
      sparsity: a target sparsity (0.36, 0.59, 0.79), turned into a round by `fraction`.
    """
    if (round is None) == (sparsity is None):
        raise ValueError("give exactly one of round= or sparsity=")
    k = round if round is not None else rounds_for_sparsity(sparsity, fraction)
    path = round_dir(workdir, k) / "teacher"
    if not path.exists():
        raise FileNotFoundError(f"round {k} has not finished in {workdir} (no {path})")
    tree = load_tree(path, {"variables": template, "masks": masks_lib.init(template["params"])})
    return tree["variables"], tree["masks"]
