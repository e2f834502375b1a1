"""Experiment configs as frozen dataclasses, with `--set key=value` overrides.

An experiment script defines its config dataclass and a dict of presets (functions returning a
config); `parse_args` picks a preset, applies overrides with type checking, and returns the
config and the run directory.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from pdjax.train import Schedule

C = TypeVar("C")

# Keys renamed when the pruning and KD values moved into the experiment configs' nested specs,
# `prune` (pdjax.pruning.PruneSpec) and `kd` (pdjax.distill.KDSpec), 2026-12-02: old -> new.
# `--set` still takes the old names (with a note), and a run directory whose config.json has
# them resumes (`upgrade`).
RENAMED = {"prune_rounds": "prune.rounds", "prune_fraction": "prune.fraction", "prune_scope": "prune.scope",
           "rewind": "prune.rewind", "rewind_epoch": "prune.rewind_epoch", "finetune_lr": "prune.finetune_lr",
           "kd_temperature": "kd.temperature", "kd_alpha": "kd.alpha"}
# Before then, vgg19_to_vgg11 and resnet18_to_vgg16_mobilenetv2 had a `prune` schedule (now
# `prune.schedule`) and vgg19_to_vgg11 a `kd` schedule (now `student_kd`).
MOVED_SCHEDULES = {"prune": "prune.schedule", "kd": "student_kd"}
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


class ConfigError(ValueError):
    """A bad preset name, config key or override value."""


def to_dict(config: Any) -> dict[str, Any]:
    """A config as nested JSON-able dicts (tuples become lists)."""
    return _jsonable(dataclasses.asdict(config))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: cannot parse {text!r}")
    if origin is tuple:
        items = [t for t in text.replace("(", "").replace(")", "").split(",") if t.strip()]
        item_type = args[0] if args else str
        return tuple(_parse_value(t.strip(), item_type, key) for t in items)
    if annotation is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key} takes true or false, got {text!r}")
    if annotation in (int, float):
        try:
            value = float(text) if annotation is float else int(text)
        except ValueError:
            raise ConfigError(f"{key} takes {annotation.__name__}, got {text!r}") from None
        return value
    if annotation is str:
        return text
    raise ConfigError(f"{key}: cannot set a field of type {annotation}")


def override(config: C, assignments: Sequence[str]) -> C:
    """Returns `config` with `key=value` assignments applied; dotted keys reach nested configs.

    Values are parsed by the field's type: `epochs=3`, `lr=0.05`, `milestones=30,60`,
    `max_train=none`, `augment=false`. The config is built once, after every assignment, so
    its checks (each spec's `__post_init__`, cross-field ones included) see the final values
    whatever the order of the assignments.
    """
    tree = _unbuilt(config)
    for assignment in assignments:
        if "=" not in assignment:
            raise ConfigError(f"--set takes key=value, got {assignment!r}")
        key, text = (part.strip() for part in assignment.split("=", 1))
        try:
            _set(tree, key.split("."), text, key)
        except ConfigError:
            new = renamed(key)
            if new == key:
                raise
            _set(tree, new.split("."), text, new)  # an old name (RENAMED): set the key it became
            print(f"note: --set {key} is now --set {new}", file=sys.stderr)
    return _build(tree)


def _unbuilt(config: Any) -> dict[str, Any]:
    """A dataclass config as {"__class__": its class, field: value or a nested unbuilt config}."""
    tree: dict[str, Any] = {"__class__": type(config)}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        tree[field.name] = _unbuilt(value) if dataclasses.is_dataclass(value) else value
    return tree


def _build(tree: dict[str, Any], path: str = "") -> Any:
    """Builds the config bottom up; a spec's own check (its `__post_init__`, which names its
    field: "epochs=-1 must be >= 0") becomes a ConfigError naming the field's place in the config
    ("train.epochs=-1 must be >= 0")."""
    values = {k: _build(v, f"{path}{k}.") if isinstance(v, dict) and "__class__" in v else v
              for k, v in tree.items() if k != "__class__"}
    try:
        return tree["__class__"](**values)
    except (TypeError, ValueError) as err:
        message = str(err)
        raise ConfigError(message if message.startswith(path) else f"{path}{message}") from None


def _set(tree: dict[str, Any], path: list[str], text: str, full_key: str) -> None:
    cls = tree["__class__"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    name = path[0]
    if name not in fields:
        raise ConfigError(f"unknown config key {full_key!r}; known here: {', '.join(fields)}")
    current = tree[name]
    nested = isinstance(current, dict) and "__class__" in current
    if len(path) > 1:
        if not nested:
            raise ConfigError(f"{full_key!r}: {name} has no sub-keys")
        _set(current, path[1:], text, full_key)
        return
    if nested:
        raise ConfigError(f"{full_key!r} is a group; set one of its keys, e.g. {full_key}.epochs")
    tree[name] = _parse_value(text, typing.get_type_hints(cls)[name], full_key)


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


def _stop(message: str) -> None:
    """A bad command line: one `error:` line on stderr, exit status 2, before anything runs."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(experiment: str, presets: Mapping[str, Callable[[], C]],
               argv: Sequence[str] | None = None, doc: str | None = None) -> tuple[str, C, Path, bool]:
    """Command line of an experiment script: `--preset`, `--set key=value`, `--out`, `--restart`.

    Returns:
      (preset name, resolved config, run directory, restart flag).
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", help=f"one of: {', '.join(presets)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable), e.g. --set train.epochs=3")
    parser.add_argument("--out", default=None, help="run directory (default runs/<experiment>/<preset>)")
    parser.add_argument("--restart", action="store_true",
                        help="delete the run directory's checkpoints and results and start over")
    args = parser.parse_args(argv)
    if args.preset not in presets:
        _stop(f"unknown preset {args.preset!r}; known: {', '.join(presets)}")
    try:
        config = override(presets[args.preset](), args.overrides)
    except ConfigError as err:
        _stop(str(err))
    out = Path(args.out) if args.out else Path("runs") / experiment / args.preset
    return args.preset, config, out, args.restart
