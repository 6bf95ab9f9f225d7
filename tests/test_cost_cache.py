"""Behaviour of the on-disk cost cache: round trips, recovery, sharing between processes."""

from __future__ import annotations

import math
import multiprocessing
import os
import sqlite3
import warnings

import numpy as np
import pytest

from superopt.cost_model.cache import (
    FILE_NAME,
    CostCache,
    cache_files,
    default_cache_dir,
    make_key,
)


def test_round_trip_and_replace(tmp_path):
    cache = CostCache(tmp_path)
    assert cache.get("a") is None and len(cache) == 0 and "a" not in cache
    cache.put("a", 1.5e-6)
    cache.put("a", 2.5e-6)
    cache.put_many({"b": 1e-3, "c": 0.0})
    cache.put_many([("d", 4.0)])
    assert cache.get("a") == 2.5e-6 and cache.get("c") == 0.0
    assert len(cache) == 4 and "d" in cache
    assert cache.persistent and cache.path == tmp_path / FILE_NAME


def test_entries_persist_across_instances_and_clear_empties(tmp_path):
    with CostCache(tmp_path) as cache:
        cache.put("k", 0.25)
    reopened = CostCache(tmp_path / FILE_NAME)  # a file path works as well as its folder
    assert reopened.get("k") == 0.25
    reopened.clear()
    assert len(reopened) == 0 and CostCache(tmp_path).get("k") is None


def test_bad_entries_are_refused(tmp_path):
    cache = CostCache(tmp_path)
    with pytest.raises(ValueError):
        cache.put("k", math.nan)
    with pytest.raises(TypeError):
        cache.put(3, 1.0)  # type: ignore[arg-type]


def test_keys_are_stable_and_order_free():
    key = make_key(op="Conv", shape=(1, 3, 8, 8), attrs={"b": 1, "a": 2}, provider="CPU")
    assert key == make_key(provider="CPU", attrs={"a": 2, "b": 1}, shape=[1, 3, 8, 8], op="Conv")
    assert key != make_key(op="Conv", shape=(1, 3, 8, 8), attrs={"b": 1, "a": 2}, provider="CUDA")
    assert make_key(n=np.int64(3), a=np.arange(2)) == make_key(n=3, a=[0, 1])
    assert len(key) == 64
    with pytest.raises(TypeError):
        make_key(bad=object())


def test_default_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    cache = CostCache()
    cache.put("k", 1.0)
    assert (tmp_path / "here" / FILE_NAME).exists()


def test_memory_cache_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = CostCache(":memory:")
    cache.put("k", 1.0)
    assert cache.get("k") == 1.0 and not cache.persistent and os.listdir(tmp_path) == []


def test_a_corrupt_file_is_replaced_not_piled_up(tmp_path):
    # A copy an earlier version moved aside is cleaned up with the next replacement.
    (tmp_path / f"{FILE_NAME}.corrupt-1700000000-42").write_bytes(b"old")
    for _ in range(2):  # corrupt twice: still one file
        (tmp_path / FILE_NAME).write_bytes(b"\x00garbage, not SQLite\xff" * 200)
        with pytest.warns(UserWarning, match="unreadable.*replaced it with a new one"):
            cache = CostCache(tmp_path)
        cache.put("k", 3.0)
        assert cache.get("k") == 3.0 and cache.persistent
        cache.close()
    assert not [name for name in os.listdir(tmp_path) if ".corrupt" in name]
    assert cache_files(tmp_path) == sorted(tmp_path / name for name in os.listdir(tmp_path))


def test_a_foreign_sqlite_file_is_moved_aside(tmp_path):
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute("PRAGMA user_version = 77")
    with pytest.warns(UserWarning, match="schema version 77"):
        cache = CostCache(tmp_path)
    cache.put("k", 1.0)
    assert cache.get("k") == 1.0


def test_an_unusable_folder_falls_back_to_memory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="in memory only"):
        cache = CostCache(blocker / "cache")
    cache.put("k", 2.0)
    assert cache.get("k") == 2.0 and len(cache) == 1 and not cache.persistent


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_falls_back_to_memory(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.warns(UserWarning, match="in memory only"):
            cache = CostCache(tmp_path)
        cache.put("k", 2.0)
        assert cache.get("k") == 2.0
    finally:
        tmp_path.chmod(0o700)


def _write_keys(folder: str, worker: int, count: int) -> None:
    cache = CostCache(folder)
    for i in range(count):
        cache.put(f"w{worker}-{i}", worker + i / 1000)
    cache.put_many({f"w{worker}-bulk-{i}": float(i) for i in range(count)})


def test_processes_share_one_cache(tmp_path):
    workers, count = 3, 60
    context = multiprocessing.get_context("spawn")  # fork is unsafe with ORT threads around
    processes = [
        context.Process(target=_write_keys, args=(str(tmp_path), w, count)) for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no recovery may have happened
        cache = CostCache(tmp_path)
        assert len(cache) == workers * count * 2
        assert cache.get("w2-7") == 2.007 and cache.get("w1-bulk-5") == 5.0
