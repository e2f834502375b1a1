"""The experiments' command line (the CLI layer, above the library): it parses and refuses
(`start`: the config, its data sources, batch sizes against the devices, every process given the
same command), writes the run directory (`prepare`: config.json, refused if changed) and turns
errors into one-line messages and exit statuses (`run_cli`). Training a design, pooling parts
and writing its report are the library's (`pdjax.designs`). The library never imports this."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax

from pdjax import data as data_lib
from pdjax import checkpoints, compilation, costs, parallel, render
from pdjax import steps as steps_lib
from pdjax.cli.config import ConfigError, parse_args
from pdjax.data import DataError
from pdjax.designs.common import RunDirError, diff, first_disagreement, schedules, to_dict, upgrade
from pdjax.files import write_json_atomic
from pdjax.masks import MaskError
from pdjax.provenance import StaleRunError
from pdjax.stopping import Preempted, StopRequest
from pdjax.types import SpecError


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
            results = main(argv)
        if _started.get("dry_run"):
            dry_run_report(_started["out"], results)
        return results
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
    for name, value in schedules(config):
        if value.batch_size % n:
            raise ConfigError(f"{name}.batch_size={value.batch_size} does not split over the {n} "
                              f"devices; use a multiple of {n}")
    _started.update(out=out, dry_run=getattr(config, "dry_run", False))
    run_config = {"experiment": experiment, "preset": preset, "config": to_dict(config)}
    defaults = {"experiment": experiment, "preset": preset, "config": to_dict(type(config)())}
    _check_processes_agree(out, run_config)
    out = prepare(out, run_config, restart=restart, defaults=defaults)
    _check_shared_run_directory(out)
    return preset, config, out, run_config


# The run `start` prepared in this process (its directory, whether a dry run), for `run_cli`.
_started: dict[str, Any] = {}
EXPORT_PLATFORMS = ("cuda", "tpu")


def dry_run_report(out: Path, results: Mapping[str, Any]) -> None:
    """After a dry run: its cost plan (every stage's real epochs, images, training FLOPs and hours
    at the assumed throughputs, `pdjax.costs.plan_markdown`) and every train and eval step it
    built lowered for cuda and tpu (`jax.export`): printed, and written as cost_plan.md/json."""
    families = results.get("families")
    plans = {name: r.get("plan", []) for name, r in families.items()} if families else {"": results.get("plan", [])}
    exports = []
    for key, step in steps_lib.built_steps().items():
        try:
            step.export(EXPORT_PLATFORMS)
            outcome = "lowered"
        except Exception as err:  # noqa: BLE001 -- any failure is the finding, reported in one line
            outcome = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        exports.append({"step": key[0], "model": type(key[1]).__name__,
                        "teacher": "" if key[0] != "train" or key[7] is None else type(key[7]).__name__,
                        "platforms": ", ".join(EXPORT_PLATFORMS), "outcome": outcome})
    text = ["# Dry run: cost plan and lowering\n",
            "Every stage ran two steps on synthetic data of the real data's shape and classes; the plan below is "
            "the real run's: each stage's epochs and training images, its training FLOPs per image (XLA's count of "
            "3 forward passes, plus the teacher's for a distilled stage), and the hours at the sustained throughputs "
            "docs/scaling.md assumes (not measured).\n"]
    for name, plan in plans.items():
        text += [f"## {name or 'stages'}\n", costs.plan_markdown(plan)]
    text += ["## Steps lowered for accelerators\n", render.markdown_table(exports, [
        ("step", "step", "s"), ("model", "model", "s"), ("teacher", "teacher", "s"),
        ("platforms", "platforms", "s"), ("outcome", "outcome", "s")])]
    markdown = "\n".join(text)
    if parallel.is_main_process():
        render.write_results(out, {"plans": plans, "exports": exports}, markdown, stem="cost_plan")
        print(f"\n{markdown}\ncost plan in {out}/cost_plan.md")


def data_keys(config: Any) -> list[str]:
    """The config fields holding the data sources this run loads: each family's of a
    two-family config (`data_key`), else `data`."""
    if hasattr(config, "data_key"):
        return [config.data_key(name) for name in config.families]
    return ["data"] if hasattr(config, "data") else []


def _check_processes_agree(out: Path, run_config: Mapping[str, Any]) -> None:
    """Every process must be given the same run directory and config (checked before anything
    is written, so that no process waits for another that stopped)."""
    paths = parallel.gather_texts(str(Path(out).resolve()))
    if len(set(paths)) > 1:
        listed = ", ".join(f"process {i}: {p}" for i, p in enumerate(paths))
        raise RunDirError(f"all processes must share one run directory (--out), got {listed}")
    other = first_disagreement(run_config)
    if other is not None:
        i, ours, theirs = other
        raise ConfigError(f"process {i} was given another config than process 0 (differs in: "
                          f"{', '.join(diff(ours, theirs))}); start every process with the same command")


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


