"""Experiment configs as frozen dataclasses, with `--set key=value` overrides.

An experiment script defines its config dataclass and a dict of presets (functions returning a
config); `parse_args` picks a preset, applies overrides with type checking, and returns the
config and the run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from pdjax.designs.common import renamed

C = TypeVar("C")

class ConfigError(ValueError):
    """A bad preset name, config key or override value."""


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
    parser.add_argument("--dry-run", action="store_true",
                        help="every stage for two steps on synthetic data of the real data's shape, a cost plan, "
                             "and each step lowered for cuda and tpu (default --out runs/<experiment>/<preset>-dry-run)")
    args = parser.parse_args(argv)
    if args.preset not in presets:
        _stop(f"unknown preset {args.preset!r}; known: {', '.join(presets)}")
    try:
        config = override(presets[args.preset](), args.overrides + (["dry_run=true"] if args.dry_run else []))
    except ConfigError as err:
        _stop(str(err))
    default = f"{args.preset}-dry-run" if args.dry_run else args.preset
    out = Path(args.out) if args.out else Path("runs") / experiment / default
    return args.preset, config, out, args.restart
