"""`verify_rules`: give every rule a proof record, in parallel worker processes.

Strategy per rule: (1) the axiomatic proof, valid for every shape of the rule's classes (each
variable at its rank, `rule_ranks`); (2) after a proof, a cheap second witness: the bounded
check at small concrete shapes of those classes (`bounded.witness_shapes`: distinct small dims,
and size-1 dims). If it finds a counterexample the rule is "refuted" (with a note that the
axioms proved it: an axiom is wrong or under-guarded, and that is what we need to learn);
(3) if the axioms do not prove it, the bounded check at the rule's example shapes: a
counterexample refutes the rule, and an equality that holds there alone is recorded as
"unknown" ("holds at the example shapes only"), never as proved. Every Z3 query has a timeout,
so a rule costs at most about 2 x timeout_s plus the witness's budget. Whatever goes wrong
inside the verifier, a rule gets a record ("unknown" with a one-line reason), never a crash.

Example:
    >>> from superopt.core.rules import Rule
    >>> r = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"}, example={"x": (2, 2)})
    >>> verify_rules([r])[0].proof["result"]                                # doctest: +SKIP
    'proved'
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from superopt.core.rules import Rule

Progress = Callable[[int, int, Rule], None]

WITNESS_TIMEOUT_S = 2.0  # per Z3 query of the second witness (capped by the rule's timeout)
WITNESS_BUDGET_S = 0.25  # no second witness shape once the first took this long


def rule_ranks(rule: Any) -> dict[str, int]:
    """The rank class of every variable of the rule: its declared ranks (`Rule.ranks`,
    superopt-rules/2), else the ranks of its example shapes (superopt-rules/1). The one place
    the verifier's driver reads a rule's ranks."""
    ranks = dict(getattr(rule, "ranks", None) or {})
    if ranks:
        return ranks
    return {k: len(v) for k, v in dict(getattr(rule, "example", {}) or {}).items()}


def rule_classes(rule: Any) -> dict[str, str]:
    """The classes a proof covers, as the record states them: the rule's own (`Rule.classes`,
    which also names parameter types) where it has them, else from `rule_ranks`."""
    if callable(getattr(rule, "classes", None)):
        return dict(rule.classes())
    ranks = rule_ranks(rule)
    return {k: (f"rank {ranks[k]}" if k in ranks else "any rank") for k in sorted(rule.vars)}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


def _second_witness(rule: Rule, record: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The bounded check at small shapes of the rule's classes, after an axiomatic proof:
    the record, refuted if it finds a counterexample, else with a "witness" line."""
    from superopt.verifier.bounded import check_rule, shapes_text, witness_shapes

    shapes_list = witness_shapes(rule, rule_ranks(rule))
    if not shapes_list:
        return {**record, "witness": "none: no small shapes of the rule's classes type-check"}
    limit = min(timeout_s, WITNESS_TIMEOUT_S)
    start, checked, why = time.perf_counter(), [], ""
    for shapes in shapes_list:
        if checked and time.perf_counter() - start > WITNESS_BUDGET_S:
            break
        res = check_rule(rule, shapes, timeout_s=limit)
        if res["result"] == "refuted":
            return {k: v for k, v in record.items() if k not in ("classes",)} | {
                "method": "bounded", "result": "refuted",
                "counterexample": {**res["counterexample"], "shapes": {
                    k: list(v) for k, v in shapes.items()}},
                "note": "the axioms proved this rule, but the bounded check at "
                        f"{shapes_text(shapes)} refutes it: an axiom is wrong or "
                        "under-guarded"}
        if res["result"] == "holds":
            checked.append(shapes)
        elif not why:
            why = res.get("reason", "")
    if not checked:
        return {**record, "witness": f"none: {why or 'the bounded check did not finish'}"}
    return {**record, "witness": "bounded at " + "; ".join(shapes_text(s) for s in checked)}


def verify_rule(rule: Rule, timeout_s: float = 5.0) -> Rule:
    """One rule with its proof record (see `verify_rules`)."""
    import z3

    from superopt.verifier.bounded import check_rule
    from superopt.verifier.prove import prove_rule
    from superopt.verifier.semantics import CannotLower, MissingSemantics, check_rule_ops

    start = time.perf_counter()
    record: dict[str, Any] = {"z3": z3.get_version_string()}
    try:
        check_rule_ops(rule.ops())
        axiomatic = prove_rule(rule, timeout_s)
        if axiomatic["result"] == "proved":
            record.update(method="axioms", result="proved",
                          classes=dict(axiomatic.get("classes") or rule_classes(rule)))
            record = _second_witness(rule, record, timeout_s)
        else:
            bounded = check_rule(rule, timeout_s=timeout_s)
            record["method"] = "bounded"
            if bounded["result"] == "refuted":
                record.update(result="refuted", counterexample=bounded["counterexample"])
            elif bounded["result"] == "holds":
                record.update(result="unknown", reason="holds at the example shapes only; "
                              f"axioms: {axiomatic['reason']}")
            else:
                record.update(result="unknown",
                              reason=f"axioms: {axiomatic['reason']}; {bounded['reason']}")
    except MissingSemantics as e:
        record.update(method="axioms", result="unknown", reason=str(e))
    except CannotLower as e:
        record.update(method="axioms", result="unknown", reason=str(e))
    except z3.Z3Exception as e:
        record.update(method="axioms", result="unknown", reason=f"Z3 error: {e}")
    except Exception as e:  # noqa: BLE001 - a rule the verifier chokes on gets a record
        record.update(method="axioms", result="unknown", reason=f"verifier error: {_one_line(e)}")
    record["seconds"] = round(time.perf_counter() - start, 3)
    return rule.with_proof(record)


def _work(item: tuple[int, dict, float]) -> tuple[int, dict]:
    index, data, timeout_s = item
    return index, verify_rule(Rule.from_json(data), timeout_s).to_json()


def verify_rules(rules: Sequence[Rule], *, timeout_s: float = 5.0, workers: int | None = None,
                 progress: Progress | None = None) -> list[Rule]:
    """Every rule, in input order, with a proof record:

    {"method": "axioms" | "bounded", "result": "proved" | "refuted" | "unknown",
     "classes": {"x": "rank 2", ...} (proved: the classes the proof covers),
     "witness": "bounded at x=(2, 3), ..." (proved: the second witness, or "none: why"),
     "counterexample": {...} (refuted), "note": "..." (refuted after an axiomatic proof),
     "reason": "..." (unknown), "z3": version, "seconds": float}

    `workers` processes (default: the CPU count; 1 runs in this process); `progress(done,
    total, rule)` is called after each rule. Ctrl-C stops the workers and raises
    KeyboardInterrupt.
    """
    rules = list(rules)
    total = len(rules)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    out: list[Rule | None] = [None] * total
    if workers == 1 or total <= 1:
        for i, r in enumerate(rules):
            out[i] = verify_rule(r, timeout_s)
            if progress:
                progress(i + 1, total, out[i])
        return out  # type: ignore[return-value]
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(min(workers, total))
    try:
        items = [(i, r.to_json(), timeout_s) for i, r in enumerate(rules)]
        for done, (i, data) in enumerate(pool.imap_unordered(_work, items), start=1):
            proved = Rule.from_json(data)
            out[i] = rules[i].with_proof(proved.proof)
            if progress:
                progress(done, total, out[i])
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return out  # type: ignore[return-value]



# ---------------------------------------------------------------------------------------------
# on Ray (`superopt verify --ray`, `superopt generate --ray`)

RAY_TASK_RETRIES = 3  # a verification task whose worker dies runs again


def ray_task_limit(timeout_s: float) -> float:
    """Wall seconds one rule's task may run before it is cancelled: its Z3 queries (axioms,
    bounded check, second witness) each have `timeout_s`; the rest is slack for a worker that
    imports z3 first. Covers a Z3 call that ignores its own timeout."""
    return 3 * timeout_s + WITNESS_TIMEOUT_S + 60.0


def _read_ray_checkpoint(path: str | os.PathLike | None, timeout_s: float) -> dict[str, dict]:
    """Proof records already written to a checkpoint (JSON lines `{"id", "timeout_s",
    "proof"}`; a torn last line is ignored), for rules verified with the same timeout."""
    import json

    out: dict[str, dict] = {}
    if path is None or not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and d.get("timeout_s") == timeout_s and "proof" in d:
                out[d["id"]] = d["proof"]
    return out


def verify_rules_ray(rules: Sequence[Rule], *, timeout_s: float = 5.0,
                     address: str | None = None, workers: int | None = None,
                     progress: Progress | None = None,
                     checkpoint: str | os.PathLike | None = None,
                     task_limit_s: float | None = None) -> list[Rule]:
    """`verify_rules` as Ray tasks, one rule per task: the same proof records.

    Uses the current Ray connection, else joins `address` ("HOST:PORT", "auto") or starts a
    local Ray with `workers` CPUs (and shuts it down afterwards); raises ConnectionError when
    it cannot, ImportError when Ray is not installed. At most one task per CPU is
    in flight, so a task's wall clock starts when it is submitted; a task that runs past
    `task_limit_s` (default `ray_task_limit(timeout_s)`) is cancelled and its rule gets
    "unknown" with that reason. A task whose worker dies is retried. With `checkpoint` (a
    JSON-lines file), every record is appended as it arrives and records already there (same
    timeout) are reused, so an interrupted run resumes. Ctrl-C cancels the tasks and raises
    KeyboardInterrupt."""
    import json
    import logging

    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'superopt[ray]'") from None
    rules = list(rules)
    total = len(rules)
    limit = ray_task_limit(timeout_s) if task_limit_s is None else task_limit_s
    out: list[Rule | None] = [None] * total
    done_before = _read_ray_checkpoint(checkpoint, timeout_s)
    for i, r in enumerate(rules):
        if r.id in done_before:
            out[i] = r.with_proof(done_before[r.id])
    todo = [i for i in range(total) if out[i] is None]
    done = total - len(todo)
    if progress and done:
        progress(done, total, next(r for r in out if r is not None))
    if not todo:
        return out  # type: ignore[return-value]
    started = False
    if not ray.is_initialized():
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        try:
            if address and address != "local":
                ray.init(address=address, **quiet)
            else:
                ray.init(address="local", num_cpus=workers or os.cpu_count() or 1,
                         include_dashboard=False, object_store_memory=256 * 1024 * 1024,
                         **quiet)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = f"the Ray cluster at {address}" if address and address != "local" else "Ray"
            raise ConnectionError(f"could not start or join {where}: "
                                  f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
                                  ) from None
        started = True
    task = ray.remote(_work).options(max_retries=RAY_TASK_RETRIES, num_cpus=1)
    sink = open(checkpoint, "a", encoding="utf-8") if checkpoint is not None else None  # noqa: SIM115
    in_flight: dict = {}  # ref -> (index, submitted at)
    try:
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = list(reversed(todo))
        while queue or in_flight:
            while queue and len(in_flight) < slots:
                i = queue.pop()
                ref = task.remote((i, rules[i].to_json(), timeout_s))
                in_flight[ref] = (i, time.monotonic())
            # Wake up for the earliest deadline, so a limit is kept to within a few ms.
            first = min(t for _, t in in_flight.values())
            wait_s = min(1.0, max(0.005, first + limit - time.monotonic()))
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=wait_s)
            finished: list[tuple[int, dict]] = []
            for ref in ready:
                i, _ = in_flight.pop(ref)
                try:
                    _, data = ray.get(ref)
                    finished.append((i, Rule.from_json(data).proof))
                except ray.exceptions.RayError as e:
                    # Retries exhausted (the worker died every time) or the task failed.
                    finished.append((i, {"method": "axioms", "result": "unknown",
                                         "reason": f"verification task failed: {_one_line(e)}"}))
            now = time.monotonic()
            for ref, (i, t_submit) in list(in_flight.items()):
                if now - t_submit > limit:
                    ray.cancel(ref, force=True)
                    del in_flight[ref]
                    finished.append((i, {"method": "axioms", "result": "unknown",
                                         "reason": f"verification task ran past its {limit:.0f} s "
                                                   "limit and was cancelled"}))
            for i, proof in finished:
                out[i] = rules[i].with_proof(proof)
                done += 1
                if sink is not None:
                    sink.write(json.dumps({"id": rules[i].id, "timeout_s": timeout_s,
                                           "proof": proof}) + "\n")
                    sink.flush()
                if progress:
                    progress(done, total, out[i])
    except BaseException:
        for ref in in_flight:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - cancelling on the way out; Ray may be gone
                pass
        raise
    finally:
        if sink is not None:
            sink.close()
        if started:
            ray.shutdown()
    return out  # type: ignore[return-value]
