"""pdjax.files: a write is atomic (the old content or the new, never a mix) and durable (the
file and its directory entry reach the disk before the write returns)."""

import json
import os

import pytest

from pdjax import files


def test_the_file_is_flushed_before_it_replaces_the_old_one_and_the_directory_after(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text("old")
    synced = []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((name, path.read_text()))  # what `path` held when this reached the disk

    monkeypatch.setattr(os, "fsync", fsync)
    files.write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    (tmp_name, held_then), (dir_name, _) = synced
    assert tmp_name != str(path) and os.path.dirname(tmp_name) == str(tmp_path)
    assert held_then == "old"  # the new content was on the disk before the rename
    assert dir_name == str(tmp_path)  # then the rename itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_write_that_fails_leaves_the_old_content(tmp_path):
    path = tmp_path / "metrics.jsonl"
    files.write_jsonl_atomic(path, [{"epoch": 1}])

    def half_then_fail(tmp):
        tmp.write_text('{"epoch": 1}\n{"ep')
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(path, half_then_fail)
    assert path.read_text() == '{"epoch": 1}\n'
