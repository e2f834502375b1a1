"""Live curves: what fit writes to TensorBoard equals metrics.jsonl."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pdjax import steps, tensorboard, train

SCHEDULE = steps.Schedule(epochs=2, batch_size=64, lr=0.05, milestones=(1,), lr_factor=0.2, weight_decay=5e-4)


def test_event_file_holds_what_metrics_jsonl_holds(small_digits, tiny_vgg11, tmp_path):
    writer = tensorboard.Writer(tmp_path / "tb" / "teacher")
    train.fit(tiny_vgg11, small_digits, SCHEDULE, workdir=tmp_path / "teacher", seed=0, progress=False,
              log_every=3, writer=writer)
    events = EventAccumulator(str(tmp_path / "tb" / "teacher"))
    events.Reload()
    lines = [json.loads(line) for line in (tmp_path / "teacher" / "metrics.jsonl").read_text().splitlines()]
    numbers = {k for line in lines for k, v in line.items() if k != "epoch" and isinstance(v, (int, float))}
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= numbers
    assert set(events.Tags()["scalars"]) == {f"epoch/{k}" for k in numbers} | {"step/train_loss"}
    for key in numbers:
        logged = [(e.step, e.value) for e in events.Scalars(f"epoch/{key}")]
        assert logged == [(line["epoch"], pytest.approx(line[key], rel=1e-6)) for line in lines], key
    steps = [e.step for e in events.Scalars("step/train_loss")]
    per_epoch = len(small_digits.train) // 64  # 9 steps: logged at 3, 6, 9 of each epoch
    assert steps == [3, 6, 9, per_epoch + 3, per_epoch + 6, per_epoch + 9] and per_epoch == 9
