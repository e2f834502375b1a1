"""Experiment plumbing (the CLI layer, above the library): run directories (config saved,
refused if changed), data checks across processes, reports, the CLI. The library never imports it."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax

from pdjax import data as data_lib
from pdjax import checkpoints, compilation, controls, parallel, pipeline, pipeline_report, reports
from pdjax import results as results_lib
from pdjax.cli import replot
from pdjax.cli.config import ConfigError, diff, parse_args, to_dict, upgrade
from pdjax.data import DataError
from pdjax.masks import MaskError
from pdjax.records import StaleRunError
from pdjax.files import write_json_atomic
from pdjax.train import Preempted, Schedule, StopRequest
from pdjax.types import SpecError


class RunDirError(ValueError):
    """The run directory was made by a different configuration."""


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


def prepare(out: str | Path, config: Mapping[str, Any], *, restart: bool = False,
            defaults: Mapping[str, Any] | None = None) -> Path:
    """Creates (or reuses) a run directory and saves `config` as `config.json` in it.

    A directory whose `config.json` differs from `config` is refused with the differing keys,
    unless `restart` is true, in which case its contents are deleted first. Keys the saved
    config lacks (fields added later) count as equal while `config` has their `defaults`.

    Returns:
      The run directory.
    """
    out = Path(out)
    saved = out / "config.json"
    if restart:  # every process waits until the first has deleted it, so none reads the old config
        parallel.remove_directory(out)
    if saved.exists():
        old = json.loads(saved.read_text())
        if isinstance(old.get("config"), dict):  # saved before keys were renamed: today's names
            old["config"] = upgrade(old["config"])
        changed = diff(old, dict(config), defaults=defaults)
        if changed:
            raise RunDirError(f"{out} was made by a different config (differs in: {', '.join(changed)}); "
                              "pass --restart to start over or --out to pick another directory")
    out.mkdir(parents=True, exist_ok=True)
    if parallel.is_main_process():
        write_json_atomic(saved, dict(config))
    return out


def enable_compilation_cache() -> None:
    """Keeps compiled XLA programs on disk (`pdjax.compilation.enable_cache`, which `import pdjax`
    already did unless turned off), so that stages and resumed runs reuse them."""
    compilation.enable_cache()


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> Any:
    """Runs an experiment's `main`, turning input errors into a one-line message and exit 2,
    a failed write, unreadable checkpoints or a NaN loss into a one-line message and exit 1,
    and SIGTERM (after its checkpoint) into exit 143."""
    enable_compilation_cache()
    try:
        with StopRequest():  # SIGTERM anywhere in the run stops it at the next checkpoint
            return main(argv)
    except (DataError, ConfigError, SpecError, RunDirError, MaskError, checkpoints.CheckpointMismatchError,
            StaleRunError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, checkpoints.CheckpointError, FloatingPointError) as err:
        # A failed write (full disk, unwritable directory), unreadable checkpoints, a NaN loss.
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except Preempted as err:
        print(f"stopped: {err}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except jax.errors.JaxRuntimeError as err:
        if jax.process_count() == 1:
            raise
        first = str(err).strip().splitlines()[0][:300]
        if any(word in first.lower() for word in PEER_FAILURE_WORDS):
            print(f"error: another process of this job stopped answering ({first}); run every process's "
                  "command again to resume from the last checkpoint", file=sys.stderr, flush=True)
        else:
            print(f"error: {first}", file=sys.stderr, flush=True)
        # Skip the distributed runtime's shutdown barrier: it would wait for the dead process until
        # the heartbeat timeout and then abort with a stack trace.
        os._exit(1)


# Words of a collective's error when a peer process died (gloo, the coordination service).
PEER_FAILURE_WORDS = ("connection reset", "connection refused", "gloo", "heartbeat", "unavailable",
                      "broken pipe", "socket closed")


def _results(result: Any, run_config: Mapping[str, Any], data: data_lib.ImageData,
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
                 f"{_normalization_note(data)}.\n\n{machine or machine_note(results['environment'])}\n\n")
    return results, data_note


def write_report(out: str | Path, result: Any, experiment: str, preset: str,
                 run_config: Mapping[str, Any], data: data_lib.ImageData, notes: str = "",
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes results.json (with `extra` merged in), results.md (with `notes` before the tables)
    and the plots of a `pdjax.pipeline` result; returns the JSON."""
    out = Path(out)
    results, data_note = _results(result, run_config, data, extra)
    title = f"{experiment}, preset `{preset}`"
    markdown = pipeline_report.report(result, title, data_note + notes)
    if parallel.is_main_process():
        reports.write_results(out, results, markdown)
        # From the JSON just built (its to_json part), as `python -m pdjax.cli.replot` draws them:
        # the per-layer statistics and comparisons are not computed a second time.
        pipeline_report.plot_json(out, results, replot.title(results))
        print(f"\n{pipeline_report.student_table(result)}\n"
              f"results in {out}")
    return results


def write_controls_report(out: str | Path, result: Any, experiment: str, preset: str,
                          run_config: Mapping[str, Any], data: data_lib.ImageData,
                          parts: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Writes results.json, results.md, controls.png and curves.png of a `pdjax.controls` result;
    with `parts` (the results.json of pooled runs, `load_parts`), each part's teachers and the
    machine that trained them, instead of the pooling process's machine."""
    out = Path(out)
    extra = machine = None
    if parts:
        extra = {"parts": [{"teacher_seeds": p["config"]["teacher_seeds"], "environment": p["environment"]}
                           for p in parts]}
        machine = pooled_machine_note(parts)
    results, data_note = _results(result, run_config, data, extra, machine)
    title = f"{experiment}, preset `{preset}`"
    markdown = controls.report(result, title, data_note)
    if parallel.is_main_process():
        reports.write_results(out, results, markdown)
        controls.plot(out / "controls.png", result, f"{experiment} ({preset})")
        reports.plot_curves(out / "curves.png", pipeline_report.mean_over_seeds(
            {k: v for k, v in result.curves.items() if "student_" in k}), xlabel="epoch",
            ylabel="student validation accuracy", title=f"{experiment} ({preset}): students, mean over seeds")
        print(f"\n{controls.answer(result)}\nresults in {out}")
    return results


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


def _normalization_note(data: data_lib.ImageData) -> str:
    values = f"mean {tuple(round(m, 3) for m in data.mean)}, std {tuple(round(v, 3) for v in data.std)}"
    if data.normalization in data_lib.NORMALIZATION:
        return f"PAPER.md's {data.normalization} constants ({values})"
    return f"{data.normalization} ({values})"


def write_index(out: str | Path, experiment: str, preset: str, arms: Mapping[str, dict[str, Any]]) -> None:
    """A top-level results.md/results.json for an experiment with several arms (sub-directories)."""
    lines = [f"# {experiment}, preset `{preset}`\n"]
    for arm, results in arms.items():
        lines.append(f"- [{arm}]({arm}/results.md): " + ", ".join(
            f"{results_lib.student_name(r['model'], r['width_rule'], r['derived_from_sparsity'])} / {r['teacher']}"
            + (f" {r['teacher_sparsity']:.0%}" if r.get("teacher_sparsity") else "")
            + f": {r['test_accuracy']:.4f}" for r in results["students"]))
    total = sum(r["train_seconds"]["total"] for r in arms.values())
    lines.append(f"\nTraining time, the stages' `train s` summed over the arms: {total:,.0f} s ({total / 3600:.2f} h); "
                 "each arm's results.md splits it.")
    if parallel.is_main_process():
        reports.write_results(out, {"experiment": experiment, "preset": preset, "arms": dict(arms)},
                              "\n".join(lines) + "\n")


def start(experiment: str, presets: Mapping[str, Callable[[], Any]], argv: Sequence[str] | None,
          doc: str | None) -> tuple[str, Any, Path, dict[str, Any]]:
    """The common start of an experiment script: parse the command line, check the config,
    start the distributed runtime, prepare the run directory.

    Returns:
      (preset, config, run directory, run config as saved in config.json).
    """
    preset, config, out, restart = parse_args(experiment, presets, argv, doc)
    for key in data_keys(config):
        try:
            data_lib.check_source(getattr(config, key))
        except DataError as err:
            raise ConfigError(f"{key}={getattr(config, key)!r}: {err}") from None
    checkpoint = getattr(config, "teacher_checkpoint", None)
    if checkpoint is not None and not Path(checkpoint).exists():
        raise ConfigError(f"teacher_checkpoint={checkpoint!r} does not exist: give a trained teacher's stage "
                          "directory or saved tree")
    parallel.initialize_distributed()
    n = jax.device_count()
    for name, value in _schedules(config):
        if value.batch_size % n:
            raise ConfigError(f"{name}.batch_size={value.batch_size} does not split over the {n} "
                              f"devices; use a multiple of {n}")
    run_config = {"experiment": experiment, "preset": preset, "config": to_dict(config)}
    defaults = {"experiment": experiment, "preset": preset, "config": to_dict(type(config)())}
    _check_processes_agree(out, run_config)
    out = prepare(out, run_config, restart=restart, defaults=defaults)
    _check_shared_run_directory(out)
    return preset, config, out, run_config


def data_keys(config: Any) -> list[str]:
    """The config fields holding the data sources this run loads: each arm's of a two-arm
    config (`data_key`), else `data`."""
    if hasattr(config, "data_key"):
        return [config.data_key(arm) for arm in config.arms]
    return ["data"] if hasattr(config, "data") else []


def _schedules(config: Any, prefix: str = "") -> list[tuple[str, Schedule]]:
    """Every `Schedule` of a config, nested specs included, with its dotted key."""
    out = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, Schedule):
            out.append((f"{prefix}{field.name}", value))
        elif dataclasses.is_dataclass(value):
            out += _schedules(value, f"{prefix}{field.name}.")
    return out


def _check_processes_agree(out: Path, run_config: Mapping[str, Any]) -> None:
    """Every process must be given the same run directory and config (checked before anything
    is written, so that no process waits for another that stopped)."""
    paths = parallel.gather_texts(str(Path(out).resolve()))
    if len(set(paths)) > 1:
        listed = ", ".join(f"process {i}: {p}" for i, p in enumerate(paths))
        raise RunDirError(f"all processes must share one run directory (--out), got {listed}")
    other = _first_disagreement(run_config)
    if other is not None:
        i, ours, theirs = other
        raise ConfigError(f"process {i} was given another config than process 0 (differs in: "
                          f"{', '.join(diff(ours, theirs))}); start every process with the same command")


def _first_disagreement(value: Any) -> tuple[int, Any, Any] | None:
    """Gathers a JSON-able value from every process (a collective); returns the first process
    whose value differs from process 0's as (its index, process 0's value, its value), or None."""
    texts = parallel.gather_texts(json.dumps(value, sort_keys=True))
    for i, text in enumerate(texts[1:], start=1):
        if text != texts[0]:
            return i, json.loads(texts[0]), json.loads(text)
    return None


def _check_shared_run_directory(out: Path) -> None:
    """The run directory must be one shared directory (a network file system across hosts):
    process 0 writes a token there that every other process must read back."""
    if jax.process_count() == 1:
        return
    token = os.urandom(8).hex() if parallel.is_main_process() else ""
    token = parallel.gather_texts(token)[0]
    if parallel.is_main_process():
        (out / ".process0").write_text(token)
    parallel.any_process(False)  # a barrier: process 0 has written the token
    path = out / ".process0"
    seen = path.read_text() if path.exists() else ""
    ok = parallel.gather_texts("ok" if seen == token else "no")
    missing = [i for i, answer in enumerate(ok) if answer != "ok"]
    if missing:
        raise RunDirError(f"{out} is not the same directory for every process (process {missing[0]} does "
                          "not see what process 0 wrote there): put the run directory on a file system "
                          "all hosts share")


def load_parts(directories: Sequence[str | Path], run_config: Mapping[str, Any],
               vary: Sequence[str], defaults: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The results.json of finished runs that are parts of the run `run_config` describes: each
    must have its experiment and config but for the keys `vary`. With `defaults` (a `to_dict`
    of the config class's defaults), a key a part lacks (made before the key existed) matches
    while the run keeps its default.

    Raises:
      RunDirError: a directory has no results.json, or another experiment or config.
    """
    parts = []
    for directory in directories:
        path = Path(directory) / "results.json"
        if not path.exists():
            raise RunDirError(f"{directory} has no results.json: pool finished runs only")
        part = json.loads(path.read_text())
        changed = [k for k in diff(upgrade(part.get("config", {})), run_config["config"], defaults=defaults)
                   if k.split(".")[0] not in vary]
        if part.get("experiment") != run_config["experiment"] or changed:
            raise RunDirError(f"{directory} is not a part of this run (differs in: "
                              f"{', '.join(changed) or 'experiment'})")
        parts.append(part)
    return parts


def load_data(config: Any, key: str = "data", out: str | Path | None = None) -> data_lib.ImageData:
    """Loads the data source of the config's field `key` with the config's data fields
    (val_fraction, seed, max_train, ...); a source that cannot be loaded is refused with a
    message naming `key`.

    Its digest (`pdjax.data.digest`) must be the same in every process, and, with `out` (the
    run directory), the same as when the run started (`out/data.json`): a data set that
    changed between runs, or a stale copy on one worker, is refused before anything trains."""
    source = getattr(config, key)
    try:
        data = data_lib.load(source, val_fraction=config.val_fraction, split_seed=config.seed,
                             max_train=config.max_train, max_test=config.max_test,
                             data_dir=getattr(config, "data_dir", None))
    except DataError as err:
        raise DataError(f"{key}={source!r}: {err}") from None
    fingerprint = data_lib.digest(data)
    other = _first_disagreement(fingerprint)
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
                                "restore it, or pass --restart to start over")
        elif parallel.is_main_process():
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(saved, fingerprint)
    return data


def run_arms(config: Any, out: Path, experiment: str, preset: str, run_config: Mapping[str, Any],
             students: Callable[[str], Sequence[Any]],
             after: Callable[[str, Any, data_lib.ImageData], tuple[str, dict[str, Any]]] | None = None
             ) -> dict[str, dict[str, Any]]:
    """Runs `pdjax.pipeline.prune_then_distill` for each arm of a `pdjax.cli.presets.TwoArmConfig`
    in `out/<arm>/`, writes each arm's report and a top-level index.

    Args:
      students: arm -> its `StudentSpec`s.
      after: (arm, pipeline result, data) -> (markdown notes, extra JSON) for the arm's report.
    """
    results = {}
    for arm in config.arms:
        source, train, prune, kd = config.arm(arm)
        data = load_data(config, config.data_key(arm), out / arm)
        result = pipeline.prune_then_distill(
            config, out=out / arm, data=data, teacher=arm, teacher_schedule=train,
            prune=config.prune_spec(prune),
            students=students(arm))
        notes, extra = after(arm, result, data) if after is not None else ("", {})
        arm_config = {**run_config, "arm": arm, "config": {**run_config["config"], "data": source}}
        results[arm] = write_report(out / arm, result, f"{experiment}: {arm}", preset, arm_config, data,
                                    notes, extra)
    write_index(out, experiment, preset, results)
    return results
