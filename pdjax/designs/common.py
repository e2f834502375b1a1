"""What every experiment design shares.

- `DesignConfig`: the config fields every design has (the data split and subsets, the student
  seeds, how a stage trains and evaluates, the pruning and KD specs), declared once and checked
  when a config is built, with the checks every design needs (each schedule trains, a subset
  holds a batch); `ModelSpec`: an architecture at a width.
- Configs as JSON: `to_dict`, `diff` (two saved configs' differing keys), `upgrade` (a config
  saved before keys were renamed, in today's names).
- `load_data`: a design's data, the same in every process and unchanged since its run directory
  was started; `environment` and `machine_note`: the machine a result names.
- `results_json`: a result's results.json with its data and machine lines.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax

from pdjax import data as data_lib
from pdjax import distill, models, parallel, pruning, sources
from pdjax.data import DataError
from pdjax.files import write_json_atomic
from pdjax.models import COMPUTE_DTYPES
from pdjax.steps import Schedule
from pdjax.tensorboard import LOGS
from pdjax.types import check

class RunDirError(ValueError):
    """A run directory (or a part of a pooled run) made by a different configuration."""


def distinct_seeds(seeds: tuple[int, ...]) -> bool:
    """At least one seed, none negative, none twice (a seed names its students' directories)."""
    return bool(seeds) and min(seeds) >= 0 and len(set(seeds)) == len(seeds)


def distinct_among(names: tuple[str, ...], allowed: tuple[str, ...]) -> bool:
    """At least one name, each among `allowed`, none twice."""
    return bool(names) and all(n in allowed for n in names) and len(set(names)) == len(names)


def count_or_none(count: int | None) -> bool:
    """None (no limit) or a count >= 1."""
    return count is None or count >= 1


@dataclasses.dataclass(frozen=True)
class DesignConfig:
    """The fields every experiment design's config has (each design subclasses it; PAPER.md's
    values as defaults). Passed whole to a design's run.

    Attributes:
      seed: the validation split's seed (and, in the prune-then-distill design, the teacher's).
      seeds: student seeds; each student is trained once per seed, paired across its arms.
      val_fraction, max_train, max_test, data_dir: as `pdjax.data.load` takes them.
      augment, eval_batch_size, compute_dtype: of every model ("bfloat16": mixed precision,
        parameters stay float32).
      prune: how a teacher is pruned (`pdjax.pruning.PruneSpec`: rounds, fraction, scope,
        rewinding, each round's schedule).
      kd: the KD loss (`pdjax.distill.KDSpec`).
      log: "tensorboard": live curves of every stage under <run dir>/tensorboard/.
      steps_per_dispatch: train steps per compiled call (`pdjax.train.fit`): 1 runs one step a
        call, exactly as ever; more run a `lax.scan` of that many steps over the training data held
        on the devices, so a fast accelerator is not bounded by the host (XLA compiles the loop's
        body apart: the floats differ in the last bits, and trajectories with them).
      dry_run: train every stage for two steps on synthetic data of the real data's shape and
        class count (`synthetic:NAME`), the schedules cut to one epoch of two batches, and keep
        each stage's real epochs and training images for a cost plan (`--dry-run`;
        `Stages.plan`).
      student_train_size: the students (from scratch and distilled alike) train on a
        class-balanced subset of this many training images (`pdjax.data.train_subset`, fixed by
        `seed`), the teachers on the whole training split; None: every image. Validation, test
        and normalization stay the whole data's.
    """

    seed: int = 0
    seeds: tuple[int, ...] = (0,)
    val_fraction: float = 0.1
    max_train: int | None = None  # training images kept (before the validation hold-out)
    max_test: int | None = None
    data_dir: str | None = None  # tensorflow-datasets data directory
    augment: bool = True
    eval_batch_size: int = 500
    prune: pruning.PruneSpec = pruning.PruneSpec()
    kd: distill.KDSpec = distill.KDSpec()  # the KD loss (`--set kd.temperature=4`)
    compute_dtype: str = "float32"
    log: str = "none"
    student_train_size: int | None = None
    steps_per_dispatch: int = 1
    dry_run: bool = False

    def __post_init__(self) -> None:
        # `prune`, `kd` and every schedule checked their own values when they were built.
        checks = [
            (self.compute_dtype in COMPUTE_DTYPES,
             f"compute_dtype={self.compute_dtype!r}: use one of {', '.join(COMPUTE_DTYPES)}"),
            (0 <= self.val_fraction < 1, f"val_fraction={self.val_fraction} must lie in [0, 1)"),
            (self.seed >= 0, f"seed={self.seed} must be >= 0"),
            (distinct_seeds(self.seeds), f"seeds={self.seeds} must name distinct seeds >= 0, at least one"),
            (count_or_none(self.max_train), f"max_train={self.max_train} must be >= 1 (none: every image)"),
            (count_or_none(self.max_test), f"max_test={self.max_test} must be >= 1 (none: every image)"),
            (self.eval_batch_size >= 1, f"eval_batch_size={self.eval_batch_size} must be >= 1"),
            (self.log in LOGS, f"log={self.log!r}: use one of {', '.join(LOGS)}"),
            (self.steps_per_dispatch >= 1, f"steps_per_dispatch={self.steps_per_dispatch} must be >= 1"),
            (count_or_none(self.student_train_size),
             f"student_train_size={self.student_train_size} must be >= 1 (none: every image)"),
        ]
        for key, schedule in schedules(self):
            checks.append((schedule.epochs >= 1, f"{key}.epochs={schedule.epochs} must be >= 1: a schedule "
                                                 "of an experiment trains"))
            if self.max_train is not None:
                kept = self.max_train - int(round(self.val_fraction * self.max_train))
                checks.append((kept >= schedule.batch_size,
                               f"max_train={self.max_train} keeps {kept} training images after the validation "
                               f"hold-out, fewer than one batch of {key}.batch_size={schedule.batch_size}"))
            if self.student_train_size is not None:
                checks.append((self.student_train_size >= schedule.batch_size,
                               f"student_train_size={self.student_train_size} is fewer images than one batch of "
                               f"{key}.batch_size={schedule.batch_size}"))
        check(checks)

    def student_data(self, data: data_lib.ImageData) -> data_lib.ImageData:
        """The data the students train on: `data` with its training split cut to
        `student_train_size` images (class-balanced, fixed by `seed`), or `data` itself."""
        return data_lib.train_subset(data, self.student_train_size, self.seed)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """An architecture at a width: `pdjax.models.get(name, ..., widths=scaled_widths(name,
    width_multiplier))`, with a narrower ResNet stem where `stem_width` is set."""

    name: str
    width_multiplier: float = 1.0
    stem_width: int | None = None

    def __post_init__(self) -> None:
        check([(self.name in models.NAMES, f"name={self.name!r}: use one of {', '.join(models.NAMES)}"),
               (self.width_multiplier > 0, f"width_multiplier={self.width_multiplier} must be > 0"),
               (self.stem_width is None or (self.stem_width >= 1 and self.name.startswith("resnet")),
                f"stem_width={self.stem_width} needs a resnet (not {self.name}) and a width >= 1")])

    @property
    def widths(self) -> tuple[int, ...]:
        return models.scaled_widths(self.name, self.width_multiplier)

    def options(self) -> dict[str, Any]:
        return {} if self.stem_width is None else {"stem_width": self.stem_width}


def schedules(config: Any, prefix: str = "") -> list[tuple[str, Schedule]]:
    """Every `Schedule` of a config, nested specs included, with its dotted key."""
    out = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, Schedule):
            out.append((f"{prefix}{field.name}", value))
        elif dataclasses.is_dataclass(value):
            out += schedules(value, f"{prefix}{field.name}.")
    return out


# ------------------------------------------------------------------ configs as JSON

# Keys renamed when the pruning and KD values moved into the experiment configs' nested specs,
# `prune` (pdjax.pruning.PruneSpec) and `kd` (pdjax.distill.KDSpec), 2026-12-02: old -> new.
# `--set` still takes the old names (with a note), and a run directory whose config.json has
# them resumes (`upgrade`).
RENAMED = {"prune_rounds": "prune.rounds", "prune_fraction": "prune.fraction", "prune_scope": "prune.scope",
           "rewind": "prune.rewind", "rewind_epoch": "prune.rewind_epoch", "finetune_lr": "prune.finetune_lr",
           "kd_temperature": "kd.temperature", "kd_alpha": "kd.alpha"}
# 2026-12-03, one meaning per word: the two-family experiments' data branches `arms` became
# `families`.
RENAMED["arms"] = "families"
# Before 2026-12-02, vgg19_to_vgg11 and resnet18_to_vgg16_mobilenetv2 had a `prune` schedule (now
# `prune.schedule`) and vgg19_to_vgg11 a `kd` schedule; on 2026-12-03 the distilled students'
# schedules (`student_kd`, `vgg_kd`, `resnet_kd`) became `*_distill`: `kd` is the KD loss only.
MOVED_SCHEDULES = {"prune": "prune.schedule", "kd": "student_distill", "student_kd": "student_distill",
                   "vgg_kd": "vgg_distill", "resnet_kd": "resnet_distill", "mobilenet_kd": "mobilenet_distill"}
_SCHEDULE_KEYS = frozenset(f.name for f in dataclasses.fields(Schedule))


def renamed(key: str) -> str:
    """The current name of a dotted key from before the renames (`rewind` -> `prune.rewind`,
    `prune.epochs` -> `prune.schedule.epochs`); any other key unchanged."""
    if key in RENAMED:
        return RENAMED[key]
    head, _, rest = key.partition(".")
    if head in MOVED_SCHEDULES and rest.split(".")[0] in _SCHEDULE_KEYS:
        return f"{MOVED_SCHEDULES[head]}.{rest}"
    return key


def upgrade(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config saved (`to_dict`) before the renames, in today's layout; a current one unchanged."""
    out = copy.deepcopy(dict(config))

    def put(dotted: str, value: Any) -> None:
        *parents, last = dotted.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = value

    for old, new in MOVED_SCHEDULES.items():
        if isinstance(out.get(old), dict) and "epochs" in out[old]:  # a schedule under the old name
            put(new, out.pop(old))
    for old, new in RENAMED.items():
        if old in out:
            put(new, out.pop(old))
    return out


def to_dict(config: Any) -> dict[str, Any]:
    """A config as nested JSON-able dicts (tuples become lists)."""
    return _jsonable(dataclasses.asdict(config))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "",
         defaults: Mapping[str, Any] | None = None) -> list[str]:
    """Dotted keys whose values differ between two `to_dict` configs.

    With `defaults` (a `to_dict` of the config class's defaults), a key that `old` lacks
    (saved before the field existed) does not count as different while `new` keeps its
    default value."""
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        default = (defaults or {}).get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff(a, b, f"{prefix}{k}.", default if isinstance(default, dict) else None)
        elif k not in old and defaults is not None and k in defaults and b == default:
            continue
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


# ------------------------------------------------------------------ data and machine

def load_data(config: Any, key: str = "data", out: str | Path | None = None,
              remedy: str = "restore it, or pass --restart to start over") -> data_lib.ImageData:
    """Loads the data source of the config's field `key` with the config's data fields
    (val_fraction, seed, max_train, ...); a source that cannot be loaded is refused with a
    message naming `key`.

    Its digest (`pdjax.data.digest`) must be the same in every process, and, with `out` (the
    run directory), the same as when the run started (`out/data.json`, written by the first
    load): a data set that changed between runs, or a stale copy on one worker, is refused
    before anything trains, with `remedy` as the advice."""
    source = getattr(config, key)
    if getattr(config, "dry_run", False):
        source = dry_run_source(source, config)
    try:
        data = data_lib.load(source, val_fraction=config.val_fraction, split_seed=config.seed,
                             max_train=None if source.startswith("synthetic:") else config.max_train,
                             max_test=None if source.startswith("synthetic:") else config.max_test,
                             data_dir=getattr(config, "data_dir", None))
    except DataError as err:
        raise DataError(f"{key}={source!r}: {err}") from None
    fingerprint = data_lib.digest(data)
    other = first_disagreement(fingerprint)
    if other is not None:
        i, ours, theirs = other
        raise DataError(f"the data {source} differs between processes: process {i} has "
                        f"{'; '.join(data_lib.digest_differences(ours, theirs))} (relative to process 0); "
                        "give every process the same data")
    if out is not None:
        saved = Path(out) / "data.json"
        if saved.exists():
            changes = data_lib.digest_differences(json.loads(saved.read_text()), fingerprint)
            if changes:
                raise DataError(f"the data {source} changed since {out} was started ({'; '.join(changes)}); "
                                f"{remedy}")
        elif parallel.is_main_process():
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(saved, fingerprint)
    return data


def dry_run_source(source: str, config: Any) -> str:
    """The synthetic stand-in of a data source for a dry run: the paper data set it is (by name,
    `pdjax.sources.paper_shape`; CIFAR-100's shape when it names none), with enough training
    images for two batches of the config's largest batch after the validation hold-out."""
    name = sources.paper_shape(source) or "cifar100"
    largest = max((s.batch_size for _, s in schedules(config)), default=128)
    train = int(2 * largest / (1 - config.val_fraction)) + 2
    return f"synthetic:{name}:{train}"


def planned_images(source: str, val_fraction: float) -> int | None:
    """The training images (after the validation hold-out) of the real data set a source names,
    for a dry run's cost plan; None where it is not one of the paper's."""
    name = sources.paper_shape(source)
    if name is None:
        return None
    total = sources.PAPER_SHAPES[name][2]
    return total - int(round(val_fraction * total))


def first_disagreement(value: Any) -> tuple[int, Any, Any] | None:
    """Gathers a JSON-able value from every process (a collective); returns the first process
    whose value differs from process 0's as (its index, process 0's value, its value), or None."""
    texts = parallel.gather_texts(json.dumps(value, sort_keys=True))
    for i, text in enumerate(texts[1:], start=1):
        if text != texts[0]:
            return i, json.loads(texts[0]), json.loads(text)
    return None


def _host_cpu() -> tuple[str, str]:
    """The host CPU's model name and a digest of its instruction-set flags (Linux's
    /proc/cpuinfo; elsewhere what `platform` knows, and no digest). On the CPU backend XLA
    compiles for the host's instruction set: a virtual machine may only say "AMD EPYC", the
    digest tells two such hosts apart."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else ""
    return model or platform.processor() or platform.machine(), digest


def environment() -> dict[str, Any]:
    """Versions, devices and the host CPU, recorded with every result. Pillow decodes the
    JPEGs of image folders, so its version is among them."""
    versions = {}
    for package in ("pdjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "pillow"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    devices = jax.devices()
    cpu, cpu_flags = _host_cpu()
    return {"versions": versions, "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind, "device_count": len(devices),
            "process_count": jax.process_count(), "host_cpu": cpu, "host_cpu_flags": cpu_flags,
            "host_cpu_count": os.cpu_count(), "usable_cores": _usable_cores(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _usable_cores() -> int | None:
    """The cores this process may run on (taskset, cgroups' cpusets): XLA:CPU's thread count
    follows it, and with it the order of its float sums, so results differ between 1 and 2."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count()


def _host(env: Mapping[str, Any]) -> str:
    """The machine of `environment()` in words: processes, devices, host CPU, jax."""
    return (f"{env['process_count']} process(es), {env['device_count']} x {env['device_kind']} "
            f"({env['backend']} backend), host CPU {env['host_cpu']} ({env['host_cpu_count']} cores, "
            f"{env.get('usable_cores') or env['host_cpu_count']} usable by the run, "
            f"flags {env['host_cpu_flags'] or 'unknown'}); jax {env['versions']['jax']}")


def machine_note(env: Mapping[str, Any]) -> str:
    """One line of a report naming the machine of `environment()`."""
    return (f"Machine: {_host(env)}. The same command reproduces these numbers exactly on "
            "the same kind of host with as many usable cores and the same versions; on another CPU, "
            "or with another number of cores, XLA can round differently and give other numbers.")


def pooled_machine_note(parts: Sequence[Mapping[str, Any]]) -> str:
    """The machine line of a report pooled from `parts`: which machine trained which teachers."""
    trained = " ".join(f"Run {i}: teacher seeds {', '.join(map(str, p['config']['teacher_seeds']))} on "
                       f"{_host(p['environment'])}." for i, p in enumerate(parts, 1))
    flags = {p["environment"].get("host_cpu_flags") for p in parts}
    note = (f"Machines: pooled without training from {len(parts)} runs (`--pool`), each trained on its "
            f"own. {trained} Every contrast pairs students of one teacher, trained in one run.")
    if len(flags) > 1:
        note += (" The runs' hosts differ, and XLA:CPU rounds differently on each: every run trained "
                 "its own scratch students (from the same seeds, with other floats); the table's are the first run's.")
    return note


def normalization_note(data: data_lib.ImageData) -> str:
    values = f"mean {tuple(round(m, 3) for m in data.mean)}, std {tuple(round(v, 3) for v in data.std)}"
    if data.normalization in data_lib.NORMALIZATION:
        return f"PAPER.md's {data.normalization} constants ({values})"
    return f"{data.normalization} ({values})"


def results_json(result: Any, run_config: Mapping[str, Any], data: data_lib.ImageData,
             extra: Mapping[str, Any] | None, machine: str | None = None) -> tuple[dict[str, Any], str]:
    """results.json's content for a result with `to_json`, and the report's data and machine
    lines (`machine`: another machine line than this process's)."""
    results = {**run_config, "environment": environment(),
               "data": {"source": run_config.get("config", {}).get("data"), "train": len(data.train),
                        "val": len(data.val), "test": len(data.test), "classes": data.num_classes,
                        "normalization": data.normalization, "mean": list(data.mean), "std": list(data.std)},
               **result.to_json(), **(extra or {})}
    data_note = (f"Data: {results['data']['source']} ({len(data.train)} train, {len(data.val)} val, "
                 f"{len(data.test)} test, {data.num_classes} classes). Normalization: "
                 f"{normalization_note(data)}.\n\n{machine or machine_note(results['environment'])}\n\n")
    return results, data_note
