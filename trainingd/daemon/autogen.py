"""Auto-generate: ask the generator service for a batch when the queue runs dry (the daemon's side), stdlib only.

The daemon calls ``AutoGenerator.tick()`` from its loop; the HTTP request runs on a background thread, so
the loop never waits on the generator. One request at a time:

    GET {url}/generate?count=N&seed=S&level=L
      -> streamed into HOME/.autogen/batch-S.part (hidden, outside inbox/: the inbox watcher never sees it)
      -> complete only when the chunked body ended properly, every line is a JSON object with ``messages``,
         and exactly N lines arrived
      -> fsync, then linked into inbox/ as syllo_autogen_<YYYYMMDD_HHMMSS>_count<N>.jsonl (never replacing a
         file), and the normal intake path queues it (at ``auto_generate.priority``).

A request starts when auto-generate is enabled, the daemon is neither paused nor stopping, at most
``low_water`` jobs are pending, fewer than ``max_pending_generated`` generated files wait in inbox/ or the
queue, and ``min_interval_s`` has passed since the last request. A generator that is down, slow (no data for
``timeout_s``), answers an error, cuts the body or sends garbage is one failure: one log line, and the next
try waits 1, 2, 4 ... up to 300 s. The partial file is removed; nothing partial ever reaches inbox/.

Each successful batch takes the next seed, so batches differ; the next seed survives restarts in
``status/autogen_state.json`` (``trainingd.contracts.autogen_state``; reset when ``auto_generate.seed`` changes).
``status()`` is the ``auto_generate`` block of the status file.

The curriculum (``auto_generate.curriculum``) decides the level asked for. It is a pure function of the
evaluations in ``status/history.jsonl`` (``curriculum_level``): starting at ``auto_generate.level``, the level
rises by one each time ``min_evals`` evaluations in a row *at the current level* reach ``promote_at``, or when
``plateau_evals`` evaluations in a row bring no new best at that level (its best at least ``plateau_min``). Being
replayed from the history, it needs no state of its own, survives restarts, and the evaluator
(``trainingd.train.evaluate``) computes the same level for its held-out set from the same file.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
from dataclasses import astuple
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from trainingd.atomic_ops import link_to_free_name, read_jsonl
from trainingd.config import AutoGenerateConfig, check_url
from trainingd.contracts import autogen_state
from trainingd.contracts.job import now_iso
from trainingd.daemon.history_fold import JsonlFold
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.autogen")

PREFIX = "syllo_autogen_"
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0


class FetchError(Exception):
    """One failed request; the message is the one log line."""


def is_generated(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def temp_dir(home: Home) -> Path:
    """Where bodies are streamed: in the home (same filesystem as inbox/, so the final link is atomic)."""
    return home.autogen_dir


def fetch_batch(url: str, *, count: int, seed: int, level: int, timeout_s: float, tmp_dir: Path, inbox: Path,
                cancel: threading.Event | None = None, now: datetime | None = None, review: float = 0.0,
                review_from: int = 1) -> tuple[Path, int]:
    """Fetch one batch into ``inbox/``; returns (final path, lines). Raises FetchError; leaves no partial file.
    ``review``: the share of puzzles from levels ``review_from`` .. ``level - 1`` (asked only when above 0)."""
    parts = urlsplit(url)
    args: dict[str, Any] = {"count": count, "seed": seed, "level": level}
    if review > 0 and level > review_from:
        args.update(review=review, review_from=review_from)
    query = urlencode(args)
    target = f"{parts.path.rstrip('/')}/generate?{query}"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"batch-{seed}.part"
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
    try:
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
            if resp.status != 200:
                body = resp.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
                raise FetchError(f"HTTP {resp.status} {resp.reason}: {body[:200]}")
            n = 0
            with open(tmp, "wb") as f:
                while True:
                    if cancel is not None and cancel.is_set():
                        raise FetchError("cancelled (the daemon is stopping)")
                    line = resp.readline()
                    if not line:
                        break
                    if not line.strip():
                        continue
                    _check_line(line, n + 1)
                    f.write(line if line.endswith(b"\n") else line + b"\n")
                    n += 1
                f.flush()
                os.fsync(f.fileno())
        except (OSError, http.client.HTTPException) as e:
            # refused, reset, timed out, or a chunked body that ended before its last chunk (IncompleteRead)
            raise FetchError(f"{type(e).__name__}: {e}") from None
        if n != count:
            raise FetchError(f"asked for {count} lines, the body held {n}")
        stem = f"{PREFIX}{(now or datetime.now()).strftime('%Y%m%d_%H%M%S')}_count{n}"
        try:
            final = link_to_free_name(tmp, inbox, stem)
        except FileExistsError as e:
            raise FetchError(str(e)) from None
        return final, n
    finally:
        conn.close()
        tmp.unlink(missing_ok=True)


def _check_line(line: bytes, lineno: int) -> None:
    try:
        doc = json.loads(line)
    except ValueError:
        raise FetchError(f"line {lineno} is not JSON: {line[:80]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list):
        raise FetchError(f"line {lineno} is not a chat record with 'messages': {line[:80]!r}")


def curriculum_level(cfg: AutoGenerateConfig, history: list[dict]) -> dict[str, Any]:
    """The level to generate (and evaluate) at, replayed from the history's evaluations, and why.

    Only evaluations that name the level of their held-out set count (an ``evaluation.eval_file`` has none), and
    only those at the level current at their time: a good score at level 1 says nothing about level 2. The level
    rises on mastery (``min_evals`` in a row at ``promote_at``) or on a plateau (``plateau_evals`` evaluations in a
    row without a new best at this level, the best at least ``plateau_min``).
    """
    fold = CurriculumFold(cfg)
    for e in history:
        if isinstance(e, dict):
            fold.feed(e)
    return fold.result()


def _rejected_at(e: dict, level: int) -> bool:
    """A history line of a job whose candidate the gate rejected after scoring it on ``level``'s held-out set."""
    g = e.get("gate")
    return e.get("kind") is None and e.get("result") == "rejected" and isinstance(g, dict) \
        and isinstance(g.get("eval_set"), dict) and g["eval_set"].get("level") == level


class CurriculumFold:
    """``curriculum_level`` one history line at a time (the daemon feeds it only the lines appended since)."""

    def __init__(self, cfg: AutoGenerateConfig):
        self.cfg = cfg
        self.level = cfg.level
        self.streak, self.since_best, self.best = 0, 0, None
        self.last: dict | None = None
        self.promoted: dict | None = None

    def feed(self, e: dict) -> CurriculumFold:
        cur = self.cfg.curriculum
        if not cur.enabled:
            return self
        if _rejected_at(e, self.level):
            # The gate scored a candidate on this level's held-out set and kept it out: no new best. Rejections
            # are the plainest sign of a plateau (and, held as ``regressing``, the stream would otherwise stop).
            if self.best is not None:
                self.since_best += 1
                em = (e["gate"].get("candidate") or {}).get("exact_match")
                self._check(e, em if isinstance(em, (int, float)) and not isinstance(em, bool) else self.best)
            return self
        em = e.get("exact_match")
        if e.get("kind") != "eval" or e.get("level") != self.level \
                or not isinstance(em, (int, float)) or isinstance(em, bool):
            return self
        self.last = {k: e.get(k) for k in ("level", "exact_match", "job_id", "finished_at")}
        self.streak = self.streak + 1 if em >= cur.promote_at else 0
        if self.best is None or em > self.best:
            self.since_best, self.best = 0, em
        else:
            self.since_best += 1
        self._check(e, em)
        return self

    def _check(self, e: dict, em: float) -> None:
        cur = self.cfg.curriculum
        why = None
        if self.streak >= cur.min_evals:
            why = "mastered"
        elif cur.plateau_evals and self.since_best >= cur.plateau_evals and self.best >= cur.plateau_min:
            why = "plateau"
        if why and self.level < cur.max_level:
            self.promoted = {"from": self.level, "to": self.level + 1, "why": why, "exact_match": em,
                             "best": self.best, "job_id": e.get("job_id"), "at": e.get("finished_at"),
                             "trained_examples": e.get("trained_examples")}
            self.level, self.streak, self.since_best, self.best = self.level + 1, 0, 0, None

    def result(self) -> dict[str, Any]:
        if not self.cfg.curriculum.enabled:
            return {"level": self.level, "reason": f"auto_generate.level {self.level} (curriculum off)",
                    "streak": 0, "since_best": 0, "best": None, "promoted_after": None}
        return {"level": self.level,
                "reason": _curriculum_reason(self.cfg, self.level, self.last, self.promoted, self.streak,
                                             self.since_best, self.best),
                "streak": self.streak, "since_best": self.since_best, "best": self.best,
                "promoted_after": self.promoted}


def _curriculum_reason(cfg: AutoGenerateConfig, level: int, last: dict | None, promoted: dict | None, streak: int,
                       since_best: int, best: float | None) -> str:
    cur = cfg.curriculum
    rule = f"{cur.min_evals} held-out evaluation(s) in a row at exact match >= {cur.promote_at}"
    if cur.plateau_evals:
        rule += f", or {cur.plateau_evals} without a new best once the best is >= {cur.plateau_min}"
    if promoted is not None:
        how = (f"{cur.min_evals} evaluation(s) in a row at >= {cur.promote_at}" if promoted["why"] == "mastered" else
               f"a plateau: no new best in {cur.plateau_evals} evaluations and rejected candidates "
               f"(best {promoted['best']:.2f})")
        after = f"after {how}, the last {promoted['exact_match']:.2f} after job {promoted['job_id']}"
    if last is None and promoted is None:
        return f"level {level}: the start (auto_generate.level); rises after {rule}"
    if level >= cur.max_level and promoted is not None:
        return f"level {level}: the top (curriculum.max_level), reached from level {promoted['from']} {after}"
    if promoted is not None and (last is None or last.get("level") != level):
        return f"level {level}: promoted from {promoted['from']} {after}; none at level {level} yet"
    return (f"level {level}: held-out exact match {last['exact_match']:.2f} in the last evaluation (best "
            f"{best:.2f}), {streak} of {cur.min_evals} in a row at >= {cur.promote_at}"
            + (f", {since_best} of {cur.plateau_evals} without a new best" if cur.plateau_evals else ""))


def read_curriculum(home: Home, cfg: AutoGenerateConfig) -> dict[str, Any]:
    """``curriculum_level`` of the home's history (an unreadable history starts at auto_generate.level)."""
    try:
        history = read_jsonl(home.history) if home.history.is_file() else []
    except (OSError, ValueError) as e:
        log.warning("curriculum: cannot read %s (%s); using auto_generate.level", home.history, e)
        history = []
    return curriculum_level(cfg, history)


class AutoGenerator:
    """The daemon's auto-generate state; every method runs on the daemon's loop except the fetch thread."""

    def __init__(self, home: Home, clock=time.monotonic):
        self.home = home
        self.clock = clock
        self.thread: threading.Thread | None = None
        self.cancel = threading.Event()
        self.outcome: tuple | None = None  # set by the thread: ("ok", path, n, seed) or ("error", message, seed)
        self.failures = 0
        self.next_at = 0.0
        self.last_error: str | None = None
        self.fetching_since: str | None = None
        try:
            saved = autogen_state.read_autogen_state(home)
        except (ValueError, OSError) as e:  # a hand-edited file: start again from auto_generate.seed
            log.warning("auto-generate: ignoring unreadable %s (%s)", autogen_state.state_path(home), e)
            saved = {}
        self.saved: dict[str, Any] = saved
        # Leftovers of a daemon that died mid-request are never complete: remove them.
        for leftover in temp_dir(home).glob("*.part") if temp_dir(home).is_dir() else []:
            leftover.unlink(missing_ok=True)
        self.cfg: AutoGenerateConfig | None = None
        self._failed_seen: set[str] | None = None
        self._done_seen: int | None = None
        self.refused_streak = 0
        self._curriculum: dict[str, Any] | None = None
        self._curriculum_key: tuple | None = None
        self._curriculum_fold: JsonlFold | None = None
        self._curriculum_error: str | None = None

    # ------------------------------------------------------------------------------------------ seeds
    def next_seed(self, cfg: AutoGenerateConfig) -> int:
        return autogen_state.next_seed(self.saved, cfg.seed)

    def _record_batch(self, cfg: AutoGenerateConfig, seed: int, level: int, path: Path, n: int) -> None:
        self.saved = autogen_state.after_batch(self.saved, config_seed=cfg.seed, seed=seed, level=level,
                                               file=path.name, count=n)
        autogen_state.write_autogen_state(self.home, self.saved)

    def curriculum(self, cfg: AutoGenerateConfig) -> dict[str, Any]:
        """The current level and why: the history's new lines folded in, all of it again when the config changed."""
        key = (cfg.level, astuple(cfg.curriculum))
        if self._curriculum_fold is None or key != self._curriculum_key:
            self._curriculum_fold = JsonlFold(self.home.history, lambda: CurriculumFold(cfg), CurriculumFold.feed)
            self._curriculum_key = key
        before = self._curriculum["level"] if self._curriculum else None
        try:
            self._curriculum = self._curriculum_fold.update().result()
            self._curriculum_error = None
        except OSError as e:
            if str(e) != self._curriculum_error:
                log.warning("curriculum: cannot read %s (%s); using auto_generate.level", self.home.history, e)
            self._curriculum_error, self._curriculum_fold = str(e), None
            self._curriculum = curriculum_level(cfg, [])
        if before is not None and self._curriculum["level"] != before:
            log.info("auto-generate: %s", self._curriculum["reason"])
        return self._curriculum

    # ------------------------------------------------------------------------------------------ loop
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def tick(self, cfg: AutoGenerateConfig, *, pending_jobs: int, may_start: bool, queue=None) -> None:
        """Reap a finished request; start one when it is wanted. Never blocks."""
        self.cfg = cfg
        if self.thread is not None and not self.thread.is_alive():
            self._reap(cfg)
        if not cfg.enabled or not may_start or self.busy() or self.clock() < self.next_at:
            return
        if pending_jobs > cfg.low_water:
            return
        waiting = self.generated_waiting(queue)
        if waiting >= cfg.max_pending_generated:
            return
        refused = self._new_refusal(queue)
        if refused:  # batches the trainer cannot use: asking again at once would fill failed/ in a loop
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.refused_streak - 1))
            self.next_at = self.clock() + delay
            self.last_error = refused
            log.warning("auto-generate: %s; next request in %.0fs", refused, delay)
            return
        problem = check_url(cfg.url, cfg.allow_remote)
        if problem:  # the config check refuses this at load; kept here so a bad url never gets fetched
            self.last_error = problem
            self.next_at = self.clock() + BACKOFF_MAX_S
            log.error("auto-generate: %s", problem)
            return
        seed = self.next_seed(cfg)
        level = self.curriculum(cfg)["level"]
        self.outcome = None
        self.cancel.clear()
        self.fetching_since = now_iso()
        self.next_at = self.clock() + cfg.min_interval_s
        log.info("auto-generate: asking %s for %d puzzles (seed %d, level %d)", cfg.url, cfg.count, seed, level)
        self.thread = threading.Thread(target=self._fetch, args=(cfg, seed, level), name="autogen-fetch",
                                       daemon=True)
        self.thread.start()

    def _fetch(self, cfg: AutoGenerateConfig, seed: int, level: int) -> None:
        try:
            review = cfg.curriculum.review if cfg.curriculum.enabled else 0.0
            path, n = fetch_batch(cfg.url, count=cfg.count, seed=seed, level=level, timeout_s=cfg.timeout_s,
                                  tmp_dir=temp_dir(self.home), inbox=self.home.inbox, cancel=self.cancel,
                                  review=review, review_from=cfg.level)
            self.outcome = ("ok", path, n, seed, level)
        except FetchError as e:
            self.outcome = ("error", str(e), seed)
        except Exception as e:  # noqa: BLE001 - anything else is one more failure, never the daemon's end
            self.outcome = ("error", f"{type(e).__name__}: {e}", seed)

    def _reap(self, cfg: AutoGenerateConfig) -> None:
        self.thread = None
        self.fetching_since = None
        outcome, self.outcome = self.outcome, None
        if outcome is None:
            return
        if outcome[0] == "ok":
            _, path, n, seed, level = outcome
            self._record_batch(cfg, seed, level, path, n)
            self.failures = 0
            self.last_error = None
            log.info("auto-generate: %s (%d puzzles, seed %d) is in inbox/", path.name, n, seed)
            return
        _, message, seed = outcome
        self.failures += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1))
        self.next_at = self.clock() + max(delay, 0.0)
        self.last_error = message
        log.warning("auto-generate: request to %s (seed %d) failed: %s; try %d in %.0fs", cfg.url, seed, message,
                    self.failures + 1, delay)

    def _new_refusal(self, queue) -> str | None:
        """The reason when a generated batch reached ``queue/failed/`` since the last look (None on the first)."""
        if queue is None:
            return None
        try:
            failed = {p.name for p in self.home.failed.iterdir() if PREFIX in p.name}
        except OSError:
            return None
        done = queue.counts()["done"]
        first = self._failed_seen is None
        new = sorted(failed - (self._failed_seen or set()))
        self._failed_seen = failed
        if not first and not new and done > (self._done_seen or 0):
            self.refused_streak = 0  # a job was trained since: the batches are usable again
        self._done_seen = done
        if first or not new:
            return None
        self.refused_streak += 1
        try:
            reason = str(queue.get(new[-1]).meta.get("reason") or "no reason").splitlines()[0]
        except Exception:  # noqa: BLE001 - only for the message
            reason = "see queue/failed/"
        return f"generated batch {new[-1]} was refused ({reason})"

    def generated_waiting(self, queue=None) -> int:
        """Generated files not yet trained: in inbox/, and pending in the queue."""
        try:
            n = sum(1 for p in self.home.inbox.iterdir() if is_generated(p.name))
        except OSError:
            n = 0
        if queue is not None:
            n += sum(1 for job in queue.jobs(["pending"]) if is_generated(job.meta.get("original_name")))
        return n

    def stop(self) -> None:
        """Ask a running request to end (the thread is a daemon thread: nothing waits for it)."""
        self.cancel.set()

    def status(self) -> dict[str, Any]:
        cfg = self.cfg or AutoGenerateConfig()
        if not cfg.enabled:
            state = "off"
        elif self.busy():
            state = "fetching"
        elif self.failures or self.refused_streak:
            state = "backoff"
        else:
            state = "idle"
        wait = max(0.0, self.next_at - self.clock()) if cfg.enabled else None
        cur = self.curriculum(cfg)
        return {"enabled": cfg.enabled, "url": cfg.url, "state": state, "level": cur["level"],
                "level_reason": cur["reason"],
                "curriculum": {"enabled": cfg.curriculum.enabled, "start_level": cfg.level,
                               "promote_at": cfg.curriculum.promote_at, "min_evals": cfg.curriculum.min_evals,
                               "plateau_evals": cfg.curriculum.plateau_evals, "review": cfg.curriculum.review,
                               "plateau_min": cfg.curriculum.plateau_min,
                               "max_level": cfg.curriculum.max_level, "streak": cur["streak"],
                               "since_best": cur["since_best"], "best": cur["best"],
                               "promoted_after": cur["promoted_after"]},
                "count": cfg.count,
                "next_seed": self.next_seed(cfg), "fetching_since": self.fetching_since,
                "failures": self.failures, "refused_batches_in_a_row": self.refused_streak,
                "last_error": self.last_error,
                "next_request_in_s": round(wait, 1) if wait is not None else None,
                **autogen_state.totals(self.saved)}
