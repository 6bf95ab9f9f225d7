"""Rule generation on Ray (`superopt generate --ray [ADDRESS]`): the stages of `generate` as Ray
tasks, with the same answer.

    >>> with ray_session(None, workers=2):                                   # doctest: +SKIP
    ...     result = generate_ray(3, ["MatMul", "Add", "Relu"], checkpoint_dir="ckpt")

Stages and how they are sharded (docs/ray.md has the user's view):

1. **enumerate**: one task per one-node root (the first operator with its arguments: the
   subtrees below the roots are independent, as in the process pool), plus one for the
   zero-node graphs. Each task splits its fingerprinted graphs into `partitions` parts by
   fingerprint (`fp mod partitions`) and returns every part as its own object.
2. **group and pair**: one task per partition takes that partition's part from every root
   (the shuffle: Ray moves the parts between nodes through its object store; the driver holds
   only references), sorts by fingerprint, groups, decodes and orients pairs
   (`candidates.propose_group`), and prunes what is local to a group: weight-only pairs,
   renaming duplicates within the partition, common supergraphs.
3. **prune**: one task merges the partitions' candidates in the order the single-process run
   visits them (fingerprint, then position in the group), keeps the first of each renaming
   class, and runs the specialization and common-subgraph stages. The common-subgraph stage
   draws one random stream in candidate order, so it is one task: splitting it would change
   which candidates survive.
4. **check**: the float64 check in independent chunks.

Identical results: each graph carries its place in the single-process order (root, position
in the root's output); every sort and every "first one wins" uses that order, so the rules
(ids, patterns, provenance) and the stage counts equal `generate`'s for the same settings.

Fault tolerance: tasks are retried (`TASK_RETRIES`) when their worker dies, and Ray rebuilds
lost objects from lineage. With `checkpoint_dir`, every finished enumerate and pair shard is
saved there (by the task, so on a cluster the folder must be shared storage) and the final
candidates by the driver; a later run with the same settings and folder loads them instead of
recomputing. Ray itself is imported only here and only when called.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import resource
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from superopt.core.errors import SuperoptError, UsageError
from superopt.core.rules import Rule
from superopt.generator import (
    GenerateResult,
    ProposeCounts,
    check_budgets,
    check_candidates,
    propose_renamed,
    prune_common_subgraphs,
    prune_specializations,
    run_meta,
    run_settings,
)
from superopt.generator.candidates import fingerprint_groups
from superopt.generator.enumeration import (
    Counts,
    Enumerator,
    run_root_here,
    zero_node_graphs,
)
from superopt.generator.opset import Universe, default_universe

__all__ = ["generate_ray", "ray_session", "import_ray", "ray_init_kwargs"]

CHECKPOINT_FORMAT = "superopt-ray-checkpoint/1"
TASK_RETRIES = 3  # a task whose worker dies runs again (Ray's retry), up to this many times
# Object store of a local Ray (it spills to disk beyond): small, the machine is shared.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024 * 1024
# Task returns under this size stay in the driver's memory instead of the object store (Ray's
# default is 100 KiB); a local Ray lowers it so every shuffle part goes through the store.
LOCAL_INLINE_RETURN_BYTES = 1024
ZERO_NODE_ROOT = -1  # the "root" of the zero-node graphs (they come first in the order)
Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------------
# the Ray session


def import_ray():
    """The `ray` module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'superopt[ray]'") from None
    return ray


def ray_init_kwargs(address: str | None, workers: int | None) -> dict:
    """`ray.init` arguments: join the cluster at `address` ("HOST:PORT", "auto",
    "ray://HOST:PORT"), or start a local Ray with `workers` CPUs (None/"local": all cores)."""
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address and address != "local":
        return {"address": address, **quiet}
    return {"address": "local", "num_cpus": workers or os.cpu_count() or 1,
            "include_dashboard": False, "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
            "_system_config": {"max_direct_call_object_size": LOCAL_INLINE_RETURN_BYTES},
            **quiet}


@contextlib.contextmanager
def ray_session(address: str | None = None, workers: int | None = None) -> Iterator[int]:
    """Connect to Ray (see `ray_init_kwargs`) unless already connected; yields the cluster's
    CPU count. Shuts Ray down on the way out if this call connected."""
    ray = import_ray()
    if ray.is_initialized():
        yield int(ray.cluster_resources().get("CPU", 1))
        return
    try:
        ray.init(**ray_init_kwargs(address, workers))
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"the Ray cluster at {address}" if address and address != "local" else "Ray"
        raise SuperoptError(f"could not start or join {where}: {str(e).splitlines()[0]}"
                            ) from None
    try:
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------------
# what runs in the tasks (plain functions; `_remote` wraps them for Ray)


def _universe(spec: tuple) -> Universe:
    ops, max_outputs = spec
    return default_universe(None if ops is None else list(ops), max_outputs)


def _worker(t0: float) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "seconds": round(time.time() - t0, 3)}


def _atomic_save(path: str, write: Callable[[object], None]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def partition(fps: np.ndarray, rows: np.ndarray, root: int, parts: int) -> list[np.ndarray]:
    """One root's graphs as `parts` tables by `fp mod parts`; a table's row is
    `[fp, root, position in the root's output, packed graph...]`."""
    n = len(fps)
    table = np.empty((n, 3 + rows.shape[1]), dtype=np.int64)
    table[:, 0] = fps
    table[:, 1] = root
    table[:, 2] = np.arange(n)
    table[:, 3:] = rows
    which = np.ascontiguousarray(fps, dtype=np.int64).view(np.uint64) % np.uint64(parts)
    return [table[which == p] for p in range(parts)]


def enumerate_shard(spec: tuple, seed: int, max_ops: int, root: int, parts: int,
                    ckpt: str | None, max_weight_ops: int = 0) -> tuple:
    """Enumerate one root's subtree (or load it from its checkpoint): (info, part 0, ...)."""
    t0 = time.time()
    resumed = bool(ckpt and os.path.exists(ckpt))
    if resumed:
        with np.load(ckpt) as z:
            fps, rows, counts = z["fps"], z["rows"], Counts(**json.loads(str(z["counts"])))
    else:
        universe = _universe(spec)
        if root == ZERO_NODE_ROOT:
            fps, rows = zero_node_graphs(Enumerator(universe, seed, max_ops, max_weight_ops))
            counts = Counts()
        else:
            out = run_root_here(universe, seed, max_ops, root, max_weight_ops)
            fps, rows, counts = out.fps, out.graphs, out.counts
        if ckpt:
            _atomic_save(ckpt, lambda f: np.savez(f, fps=fps, rows=rows,
                                                  counts=json.dumps(counts.as_dict())))
    tables = partition(fps, rows, root, parts)
    info = {"root": root, "counts": counts.as_dict(), "fingerprinted": int(len(fps)),
            "bytes": int(sum(t.nbytes for t in tables)), "resumed": resumed, **_worker(t0)}
    return (info, *tables)


def pair_shard(spec: tuple, seed: int, max_ops: int, max_weight_ops: int, shard: int,
               ckpt: str | None, *tables: np.ndarray) -> tuple[dict, list]:
    """Group one partition's graphs by fingerprint and orient each group into candidates.

    Returns (stats, records); a record is `(fp, j, renaming key, candidate or None)` for the
    first candidate of each renaming class in this partition (j: its place among the group's
    pairs; None: pruned as a common supergraph or a decomposable multi-output pair)."""
    t0 = time.time()
    if ckpt and os.path.exists(ckpt):
        with open(ckpt, "rb") as f:
            stats, records = pickle.load(f)
        return {**stats, "resumed": True, **_worker(t0)}, records
    width = max_ops + max_weight_ops  # nodes a packed graph row holds
    table = np.concatenate(tables) if tables else np.empty((0, 3 + width), dtype=np.int64)
    # The single-process order: fingerprint, then root (zero-node graphs first), then position.
    table = table[np.lexsort((table[:, 2], table[:, 1], table[:, 0]))]
    fps = np.ascontiguousarray(table[:, 0])
    rows = np.ascontiguousarray(table[:, 3:])
    groups = fingerprint_groups(fps)
    universe = _universe(spec)
    extra: dict[str, int] = {}
    counts = ProposeCounts()
    records = [(int(fps[groups[gi][0]]), j, key, c) for gi, j, key, c in
               propose_renamed(groups, fps, rows, universe, seed, max_ops, extra, counts,
                               max_weight_ops=max_weight_ops)]
    stats = {"shard": shard, "graphs": int(len(fps)), "groups": len(groups),
             "graphs in groups": int(sum(len(g) for g in groups)), "pairs": counts.pairs,
             "tensor pairs": counts.tensor, "extra": extra, "records": len(records)}
    if ckpt:
        _atomic_save(ckpt, lambda f: pickle.dump((stats, records), f))
    return {**stats, "resumed": False, **_worker(t0)}, records


def merge_and_prune(spec: tuple, seed: int, chunks: int, *shards: list) -> tuple:
    """Join the partitions' candidate records in the single-process order, keep the first of
    each renaming class, prune specializations and common subgraphs: (stats, chunk 0, ...)."""
    t0 = time.time()
    universe = _universe(spec)
    records = sorted((r for recs in shards for r in recs), key=lambda r: (r[0], r[1]))
    seen: set[str] = set()
    unique = []
    for _, _, key, c in records:
        if key in seen:
            continue
        seen.add(key)
        if c is not None:
            unique.append(c)
    stats = {"after renaming pruning": len(seen), "after common-supergraph pruning": len(unique)}
    unique = prune_specializations(unique, universe)
    stats["after specialization pruning"] = len(unique)
    kept = prune_common_subgraphs(unique, universe, seed)
    stats["after common-subgraph pruning"] = len(kept)
    bounds = np.linspace(0, len(kept), chunks + 1).astype(int)
    return ({**stats, **_worker(t0)},
            *(kept[bounds[i]:bounds[i + 1]] for i in range(chunks)))


def check_chunk(spec: tuple, seed: int, max_ops: int, max_weight_ops: int,
                candidates: list) -> tuple[dict, list]:
    """The float64 check of one chunk: (info, rules as JSON)."""
    t0 = time.time()
    universe = _universe(spec)
    _, provenance = run_settings(universe, max_ops, seed, universe.max_outputs, max_weight_ops)
    rules, false_matches = check_candidates(candidates, universe, seed, provenance)
    return ({"false matches": false_matches, **_worker(t0)}, [r.to_json() for r in rules])


# ---------------------------------------------------------------------------------------------
# the driver


def _checkpoints(folder: str | os.PathLike | None, manifest: dict) -> Path | None:
    """The checkpoint folder, created with its manifest, or checked against it."""
    if folder is None:
        return None
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--checkpoint-dir {root}: not a folder")
    (root / "enumerate").mkdir(parents=True, exist_ok=True)
    (root / "pair").mkdir(exist_ok=True)
    path = root / "manifest.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise UsageError(f"{path}: not a checkpoint manifest (unreadable JSON)") from None
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise UsageError(f"--checkpoint-dir {root} holds a run with other settings "
                             f"({', '.join(diff)} differ); use another folder")
    else:
        path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return root


def _remote(ray, fn: Callable, **options):
    return ray.remote(fn).options(max_retries=TASK_RETRIES, **options)


def _wait_all(ray, refs: list, stage: str, progress: Progress | None) -> list:
    """ray.get of every ref, reporting progress as they finish (results in ref order)."""
    index = {r: i for i, r in enumerate(refs)}
    out: list = [None] * len(refs)
    pending = list(refs)
    done = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for r in ready:
            out[index[r]] = ray.get(r)
            done += 1
        if progress:
            progress(stage, done, len(refs))
    return out


def generate_ray(max_ops: int = 3, ops: Sequence[str] | None = None, seed: int = 0,
                 max_outputs: int = 2, *, max_weight_ops: int = 0,
                 partitions: int | None = None,
                 checkpoint_dir: str | os.PathLike | None = None,
                 progress: Progress | None = None) -> GenerateResult:
    """`generate` as Ray tasks on the connected cluster (use `ray_session` first): the same
    rules and stage counts; `meta["ray"]` adds per-stage times, the shuffle volume, per-worker
    peak memory and what was resumed from `checkpoint_dir`.

    `partitions`: fingerprint partitions of the shuffle (default 4 per CPU of the cluster).
    Ctrl-C cancels the tasks and raises KeyboardInterrupt; the finished shards stay in the
    checkpoint folder. Raises UsageError for bad settings or a folder of another run."""
    ray = import_ray()
    check_budgets(max_ops, max_weight_ops)
    if not ray.is_initialized():
        raise UsageError("generate_ray needs a Ray connection (ray_session)")
    universe = default_universe(ops, max_outputs)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    parts = partitions or max(2, 4 * cpus)
    settings, _ = run_settings(universe, max_ops, seed, max_outputs, max_weight_ops)
    spec = (None if ops is None else tuple(ops), max_outputs)
    ckpt = _checkpoints(checkpoint_dir, {"format": CHECKPOINT_FORMAT, **settings,
                                         "requested_ops": list(spec[0] or ()),
                                         "partitions": parts})
    t0 = time.time()
    done_file = ckpt / "generated.json" if ckpt else None
    if done_file is not None and done_file.exists():
        return _resumed_result(done_file, universe, settings, cpus, t0)

    n_roots = len(Enumerator(universe, seed, max_ops, max_weight_ops).level1)
    roots = [ZERO_NODE_ROOT, *range(n_roots)]
    enum_task = _remote(ray, enumerate_shard, num_returns=parts + 1)
    # (stats, records) as two objects: the driver reads the stats, the records go from the
    # pair tasks to the prune task without passing through the driver.
    pair_task = _remote(ray, pair_shard, num_returns=2)
    submitted: list = []
    try:
        enum_out = [enum_task.remote(spec, seed, max_ops, r, parts,
                                     str(ckpt / "enumerate" / f"root-{r + 1:06d}.npz")
                                     if ckpt else None, max_weight_ops) for r in roots]
        submitted += [ref for refs in enum_out for ref in refs]
        # Every partition's task gets that partition's part of every root: the shuffle.
        pair_refs = [pair_task.remote(spec, seed, max_ops, max_weight_ops, p,
                                      str(ckpt / "pair" / f"shard-{p:05d}.pkl") if ckpt else None,
                                      *(refs[1 + p] for refs in enum_out))
                     for p in range(parts)]
        submitted += [ref for refs in pair_refs for ref in refs]
        enum_infos = _wait_all(ray, [refs[0] for refs in enum_out], "enumerate", progress)
        t_enum = time.time() - t0
        pair_infos = _wait_all(ray, [refs[0] for refs in pair_refs], "group+pair", progress)
        t_pair = time.time() - t0 - t_enum
        # The parts are no longer needed: drop the references so the store can free them.
        del enum_out
        submitted = [refs[1] for refs in pair_refs]
        chunks = max(1, cpus)
        prune_refs = _remote(ray, merge_and_prune, num_returns=chunks + 1).remote(
            spec, seed, chunks, *(refs[1] for refs in pair_refs))
        submitted += prune_refs
        if progress:
            progress("prune", 0, 1)
        prune_info = ray.get(prune_refs[0])
        t_prune = time.time() - t0 - t_enum - t_pair
        if progress:
            progress("prune", 1, 1)
        check_task = _remote(ray, check_chunk)
        check_refs = [check_task.remote(spec, seed, max_ops, max_weight_ops, ref)
                      for ref in prune_refs[1:]]
        submitted += check_refs
        check_out = _wait_all(ray, check_refs, "check", progress)
    except BaseException:
        for ref in submitted:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        # Let the cancellations land before returning: a task finishing as it is cancelled
        # could otherwise write its checkpoint after the caller looked at the folder.
        with contextlib.suppress(Exception):
            ray.wait(submitted, num_returns=len(submitted), timeout=10)
        raise
    t_total = time.time() - t0

    counts = Counts()
    for info in enum_infos:
        counts.add(Counts(**info["counts"]))
    extra: dict[str, int] = {}
    for info in pair_infos:
        for k, v in info["extra"].items():
            extra[k] = extra.get(k, 0) + v
    rules = [Rule.from_json(d) for _, chunk in check_out for d in chunk]
    false_matches = sum(info["false matches"] for info, _ in check_out)
    stages = {
        "graphs enumerated": counts.graphs,
        "graphs fingerprinted": sum(i["fingerprinted"] for i in enum_infos),
        "fingerprint groups": sum(i["groups"] for i in pair_infos),
        "graphs in groups": sum(i["graphs in groups"] for i in pair_infos),
        "candidate pairs": sum(i["pairs"] for i in pair_infos),
        "after weight-only pruning": sum(i["tensor pairs"] for i in pair_infos),
        **{k: prune_info[k] for k in ("after renaming pruning",
                                      "after common-supergraph pruning",
                                      "after specialization pruning",
                                      "after common-subgraph pruning")},
        "false matches (float64 check)": false_matches,
        "candidates written": len(rules),
    }
    for k, v in extra.items():
        stages[f"skipped: {k.replace('_', ' ')}"] = v
    workers: dict[str, float] = {}
    infos = enum_infos + pair_infos + [prune_info] + [info for info, _ in check_out]
    for info in infos:
        key = f"{info['host']}:{info['pid']}"
        workers[key] = max(workers.get(key, 0.0), info["peak_mb"])
    driver_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    seconds = {"enumerate": round(t_enum, 1), "total": round(t_total, 1)}
    meta = run_meta(settings, cpus, stages, counts.as_dict(), universe, seconds,
                    max([driver_mb, *workers.values()]))
    meta["ray"] = {
        "cpus": cpus,
        "partitions": parts,
        "enumerate shards": len(roots),
        "seconds": {"enumerate": round(t_enum, 1), "group+pair": round(t_pair, 1),
                    "prune (one task)": round(t_prune, 1),
                    "check": round(t_total - t_enum - t_pair - t_prune, 1),
                    "enumerate task sum": round(sum(i["seconds"] for i in enum_infos), 1),
                    "enumerate task max": max(i["seconds"] for i in enum_infos),
                    "pair task sum": round(sum(i["seconds"] for i in pair_infos), 1),
                    "pair task max": max(i["seconds"] for i in pair_infos)},
        "shuffle_bytes": sum(i["bytes"] for i in enum_infos),
        "driver_peak_mb": driver_mb,
        "peak_mb_per_worker": dict(sorted(workers.items())),
        "resumed": {"enumerate": sum(i["resumed"] for i in enum_infos),
                    "pair": sum(i["resumed"] for i in pair_infos)},
    }
    if done_file is not None:
        _atomic_save(str(done_file), lambda f: f.write(json.dumps(
            {"stages": stages, "enumeration": counts.as_dict(), "ray": meta["ray"],
             "rules": [r.to_json() for r in rules]}).encode()))
    return GenerateResult(rules, stages, meta, True, counts.as_dict())


def _resumed_result(path: Path, universe: Universe, settings: dict, cpus: int,
                    t0: float) -> GenerateResult:
    """A finished generation, read back from its checkpoint."""
    doc = json.loads(path.read_text())
    rules = [Rule.from_json(d) for d in doc["rules"]]
    meta = run_meta(settings, cpus, doc["stages"], doc["enumeration"], universe,
                    {"enumerate": 0.0, "total": round(time.time() - t0, 1)},
                    round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    meta["ray"] = {**doc["ray"], "resumed": "every generation stage (generated.json)"}
    return GenerateResult(rules, doc["stages"], meta, True, doc["enumeration"])
