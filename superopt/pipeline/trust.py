"""Proofs are checked, not trusted: a rule marked `proved` that does not come from the intact
shipped database is re-proved by the verifier before its first use, and the answer is cached.

A rules file is data anyone can write, and its proof records are claims: `(Relu ?x) => ?x`
marked `"proved"` would otherwise be applied as if it were true. `recheck_rules` asks the
verifier (`superopt.verifier.verify_rules`) about every such rule and keeps only those it proves
again, each with the fresh proof record; any other is refused with one line naming it:

    rule r1234567890: marked proved but the verifier says refuted (...); not used

The shipped database is trusted only while its seal holds (`superopt.core.rules.seal_state`);
the pipeline's `select_rules` decides which rules need re-proving.

The proof cache (`ProofCache`) is one JSON file, `proofs.json`, in the cost cache's folder
(`$SUPEROPT_CACHE_DIR`, else `$XDG_CACHE_HOME/superopt/`, else `~/.cache/superopt/`). It is keyed
by `proof_key`: the sha256 of the rule's canonical content (id, patterns, variable kinds and
classes, conditions, example shapes; not its name, provenance or proof claim) and the verifier's
`VERIFIER_VERSION`. Only definite answers (proved, refuted) are stored: an "unknown" may be a
timeout on a busy machine, and is asked again next time. Writes are atomic (temp file and
rename, merged with what other runs wrote meanwhile); an unreadable file is replaced by the next
write, never moved aside; a folder that cannot be written leaves the cache in memory for the run.
z3 is imported only when some rule is not in the cache.

Example:
    >>> kept = recheck_rules(user_rules, warn=print)        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from superopt.core.atomic import atomic_write
from superopt.core.errors import OutputError
from superopt.core.rules import Rule

CACHE_FILE = "proofs.json"
CACHE_FORMAT = "superopt-proof-cache/1"
#: seconds per Z3 query when re-proving (the shipped database was proved with 5)
DEFAULT_TIMEOUT_S = 5.0
#: up to this many rules are re-proved in this process; more go to worker processes
IN_PROCESS_MAX = 8
#: the verifier's answers the cache keeps
CACHED_RESULTS = ("proved", "refuted")

Warn = Callable[[str], None]
Progress = Callable[[int, int], None]

__all__ = ["CACHE_FILE", "ProofCache", "default_cache_path", "proof_key", "recheck_rules",
           "stderr_line", "verifier_version"]


def stderr_line(line: str) -> None:
    """The default `warn`: the line on stderr."""
    print(line, file=sys.stderr, flush=True)


def verifier_version() -> str:
    """The verifier's `VERIFIER_VERSION` (importing the verifier package does not import z3)."""
    import superopt.verifier as verifier

    return str(getattr(verifier, "VERIFIER_VERSION", "unversioned"))


def proof_key(rule: Rule, version: str) -> str:
    """The cache key: the rule's canonical content plus the verifier version (sha256 hex)."""
    content = {
        "id": rule.id,
        "src": [str(p) for p in rule.src],
        "dst": [str(p) for p in rule.dst],
        "vars": dict(sorted(rule.vars.items())),
        "classes": rule.classes(),  # the ranks and parameter types the proof covers
        "conditions": list(rule.conditions),
        "example": {k: list(v) for k, v in sorted(rule.example.items())},
        "verifier": str(version),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_path() -> Path:
    """`proofs.json` in the cost cache's folder (same resolution: `$SUPEROPT_CACHE_DIR`...)."""
    from superopt.cost_model.cache import default_cache_dir

    return default_cache_dir() / CACHE_FILE


class ProofCache:
    """The verifier's definite answers by `proof_key`, in one JSON file.

    `path` is the file (a name ending in .json), a folder (then `proofs.json` in it), or None
    for `default_cache_path()`.
    `hits` and `misses` count lookups; `replaced` says the file on disk was unreadable (it is
    overwritten by the next `flush`).
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        path = Path(path).expanduser() if path is not None else default_cache_path()
        self.path = path if path.suffix == ".json" else path / CACHE_FILE
        self.hits = 0
        self.misses = 0
        self.replaced = False
        self._new: dict[str, dict] = {}
        self._entries = self._read()

    def _read(self) -> dict[str, dict]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError):
            self.replaced = True
            return {}
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if (not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT
                or not isinstance(doc.get("entries"), dict)):
            self.replaced = True
            return {}
        return {k: v for k, v in doc["entries"].items() if _valid_entry(v)}

    def get(self, key: str) -> dict | None:
        """The proof record stored under `key`, or None."""
        entry = self._new.get(key) or self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return dict(entry["proof"])

    def put(self, key: str, rule: Rule, proof: dict) -> None:
        """Keep a definite answer (proved or refuted) for the next `flush`; others are ignored."""
        if proof.get("result") in CACHED_RESULTS:
            self._new[key] = {"rule": rule.id, "proof": dict(proof), "stored": round(time.time())}

    def __len__(self) -> int:
        return len({**self._entries, **self._new})

    def flush(self, warn: Warn | None = None) -> bool:
        """Write the new answers (merged with what the file holds now) atomically. False, with
        one line to `warn`, if the folder cannot be written (the answers stay in memory)."""
        if not self._new and not self.replaced:
            return True
        on_disk = {} if self.replaced else _reread(self.path)
        entries = {**self._entries, **on_disk, **self._new}
        doc = {"format": CACHE_FORMAT, "entries": dict(sorted(entries.items()))}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(doc, sort_keys=True, indent=1) + "\n")
        except (OSError, OutputError) as e:
            (warn or stderr_line)(f"warning: proof cache {self.path} not written ({e}); the "
                                  "rules will be re-proved next time")
            return False
        self._entries, self._new, self.replaced = entries, {}, False
        return True


def _valid_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("proof"), dict)
            and entry["proof"].get("result") in CACHED_RESULTS)


def _reread(path: Path) -> dict[str, dict]:
    """The entries a concurrent run may have written since we read the file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries = doc["entries"] if doc.get("format") == CACHE_FORMAT else {}
        return {k: v for k, v in entries.items() if _valid_entry(v)}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return {}


def recheck_rules(rules: Sequence[Rule], *, cache: ProofCache | None = None,
                  timeout_s: float = DEFAULT_TIMEOUT_S, warn: Warn | None = None,
                  progress: Progress | None = None) -> list[Rule]:
    """The rules whose proof the verifier reproduces (from the cache or now), in input order,
    each with the verifier's proof record. Every other rule is refused with one line to `warn`
    (default: stderr). `progress(done, total)` follows the rules actually re-proved."""
    warn = warn or stderr_line
    rules = list(rules)
    if not rules:
        return []
    cache = cache if cache is not None else ProofCache()
    version = verifier_version()
    keys = [proof_key(r, version) for r in rules]
    records: list[dict | None] = [cache.get(k) for k in keys]
    pending = [i for i, rec in enumerate(records) if rec is None]
    if pending:
        for i, rec in zip(pending, _prove([rules[i] for i in pending], timeout_s, progress)):
            records[i] = rec
            cache.put(keys[i], rules[i], rec)
    cache.flush(warn)
    kept = []
    for rule, rec in zip(rules, records):
        assert rec is not None
        if rec.get("result") == "proved":
            kept.append(rule.with_proof(rec))
        else:
            warn(f"rule {rule.id}: marked proved but the verifier says "
                 f"{rec.get('result', 'nothing')} ({_detail(rec)}); not used")
    return kept


def _prove(rules: list[Rule], timeout_s: float, progress: Progress | None) -> list[dict]:
    """The verifier's proof record for each rule (an "unknown" one where it cannot run)."""
    if importlib.util.find_spec("z3") is None:
        return [{"result": "unknown", "reason": "cannot re-prove here: z3 is not installed"}
                for _ in rules]
    from superopt.verifier import verify_rule, verify_rules

    workers = 1 if len(rules) <= IN_PROCESS_MAX else None
    tick = (lambda done, total, _rule: progress(done, total)) if progress else None
    try:
        return [dict(r.proof) for r in verify_rules(rules, timeout_s=timeout_s, workers=workers,
                                                    progress=tick)]
    except Exception:  # one rule the verifier chokes on must not hide the others' answers
        out = []
        for r in rules:
            try:
                out.append(dict(verify_rule(r, timeout_s).proof))
            except Exception as e:
                first = str(e).splitlines()[0][:160] if str(e) else ""
                out.append({"result": "unknown",
                            "reason": f"verifier error: {type(e).__name__}: {first}"})
        return out


def _detail(record: dict) -> str:
    """One short line on why: the counterexample's variables, or the verifier's reason."""
    if record.get("result") == "refuted":
        cex = record.get("counterexample")
        values = {k: v for k, v in cex.items() if k != "differs_at"} if isinstance(cex, dict) \
            else {}
        if values:
            text = "counterexample: " + ", ".join(f"?{k}={v}" for k, v in sorted(values.items()))
        else:
            text = "counterexample found"
    else:
        text = str(record.get("reason") or "no proof found")
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."
