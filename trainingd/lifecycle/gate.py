"""The champion/challenger gate: publish a trained candidate only when it is not worse. Stdlib only, pure.

The trainer scores the candidate on the home's fixed held-out set and on the forgetting probe (KL against the
base), compares it with the champion's per-example results on the same examples (``current_model/gate_scores.json``,
``trainingd.contracts.gate_scores``) and calls :func:`decide`. The daemon reads the decision from the job's result
and keeps the streak of rejections (:func:`rejections_in_row`, :func:`regressing_condition`).

The rule is paired (same examples, both models) and one-sided::

    d_i = candidate_i - champion_i                       (per held-out example; exact match: -1, 0 or +1)
    U   = upper confidence bound on mean(d) at gate.confidence
    reject when U < gate.min_delta                        (confidently worse than the champion by more than allowed)

* ``exact_match``: exact, conditional on the discordant pairs (McNemar): with ``n`` examples where the two differ
  and ``k`` of them won by the candidate, ``U = n/N * (2 p_U - 1)`` with ``p_U`` the Clopper-Pearson upper bound of
  ``k`` in ``n``. Identical answers (``n = 0``) give ``U = 0``: the same adapter evaluated twice is never rejected
  while ``min_delta <= 0``. With ``min_delta = 0`` this is the exact one-sided McNemar test at ``1 - confidence``.
* ``token_accuracy``: the normal bound ``mean(d) + z * sd(d) / sqrt(N)``.

The best so far: a champion that is not the best adapter published on this held-out set carries that one's
per-example scores (``best`` in its ``gate_scores.json``, :func:`best_after_promotion`), and the candidate must not
be confidently worse than it either, by the same rule. Each promotion may lose up to about one standard error
against the live adapter; this bounds the drift over many promotions. A new held-out set, a champion scored afresh
or ``trainingd promote`` starts it again.

Forgetting: the candidate's mean per-token KL(base || candidate) on the probe. A candidate is rejected for it when
it is above ``gate.max_forgetting`` *and* above the champion's (one that forgets less than the champion passes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Iterable

PROMOTED = "promoted"
REJECTED = "rejected"
METRICS = ("exact_match", "token_accuracy")
CONDITION = "regressing"
STREAK_RESET = "gate_reset"  # a history line that ends a streak of rejections (resume, promote by hand)


@dataclass(frozen=True)
class Rule:
    metric: str = "exact_match"
    min_delta: float = 0.0
    max_forgetting: float | None = None
    confidence: float = 0.9


def _binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


def clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    """One-sided upper bound on a proportion seen ``k`` times in ``n``: the p with P(X <= k; n, p) = 1 - confidence."""
    if n == 0 or k >= n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = k / n, 1.0
    for _ in range(60):  # bisection: the cdf falls as p rises
        mid = (lo + hi) / 2
        if _binom_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def paired_bound(champion: list[float], candidate: list[float], *, metric: str, confidence: float) -> dict[str, Any]:
    """The paired comparison: counts, the mean difference and its one-sided upper bound."""
    if len(champion) != len(candidate) or not champion:
        raise ValueError(f"paired scores need the same non-empty examples ({len(champion)} vs {len(candidate)})")
    n = len(champion)
    diffs = [float(b) - float(a) for a, b in zip(champion, candidate)]
    mean = sum(diffs) / n
    better = sum(1 for d in diffs if d > 0)
    worse = sum(1 for d in diffs if d < 0)
    if metric == "exact_match":
        disc = better + worse
        upper = (disc / n) * (2 * clopper_pearson_upper(better, disc, confidence) - 1) if disc else 0.0
    else:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
        upper = mean + NormalDist().inv_cdf(confidence) * sd / math.sqrt(n)
    return {"n": n, "candidate_better": better, "champion_better": worse, "mean_difference": round(mean, 6),
            "upper_bound": round(upper, 6), "confidence": confidence}


def summary(scores: dict[str, Any]) -> dict[str, Any]:
    """The aggregate of one model's per-example scores (what status, history and snapshots show)."""
    ex, ta, kl = (scores.get(k) or [] for k in ("exact_match", "token_accuracy", "forgetting"))
    mean = lambda xs: round(sum(xs) / len(xs), 6) if xs else None  # noqa: E731
    return {"exact_match": mean(ex), "token_accuracy": mean(ta), "forgetting": mean(kl), "examples": len(ex),
            "probe_prompts": len(kl)}


def _mean(xs: list | None) -> float:
    return sum(xs) / len(xs) if xs else 0.0


BEST_KEYS = ("generation_id", "job_id", "exact_match", "token_accuracy", "forgetting")


def _best_of(champion: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The champion's stored best-so-far scores, when they are valid and better than the champion's own."""
    best = champion.get("best")
    if not isinstance(best, dict) or len(best.get(metric) or []) != len(champion.get(metric) or []):
        return None
    return best if _mean(best[metric]) > _mean(champion[metric]) else None


def best_after_promotion(champion: dict[str, Any] | None, candidate: dict[str, Any], metric: str) -> dict | None:
    """What the promoted candidate's ``gate_scores.json`` keeps as ``best``: the best adapter published on this
    held-out set so far (the champion's best, or the champion), or None when the candidate is itself the best."""
    if not champion or len(champion.get(metric) or []) != len(candidate.get(metric) or []):
        return None
    best = _best_of(champion, metric) or {k: champion.get(k) for k in BEST_KEYS}
    return None if _mean(candidate[metric]) >= _mean(best[metric]) else best


def decide(champion: dict[str, Any], candidate: dict[str, Any], rule: Rule) -> dict[str, Any]:
    """Promote or reject ``candidate`` against ``champion`` (per-example scores: ``exact_match``,
    ``token_accuracy`` and ``forgetting`` lists). Returns the decision block of the result, history and status."""
    if rule.metric not in METRICS:
        raise ValueError(f"gate.metric must be one of {', '.join(METRICS)}, got {rule.metric!r}")
    paired = paired_bound(list(champion[rule.metric]), list(candidate[rule.metric]), metric=rule.metric,
                          confidence=rule.confidence)
    champ, cand = summary(champion), summary(candidate)
    reasons = []
    if paired["upper_bound"] < rule.min_delta:
        reasons.append(f"{rule.metric} is worse than the champion's ({cand[rule.metric]:.4f} vs "
                       f"{champ[rule.metric]:.4f}; {paired['champion_better']} example(s) lost, "
                       f"{paired['candidate_better']} won): the {rule.confidence:.0%} upper bound on the paired "
                       f"difference, {paired['upper_bound']:+.4f}, is below gate.min_delta {rule.min_delta:+.4f}")
    best, vs_best = _best_of(champion, rule.metric), None
    if best is not None:
        vs_best = paired_bound(list(best[rule.metric]), list(candidate[rule.metric]), metric=rule.metric,
                               confidence=rule.confidence)
        if vs_best["upper_bound"] < rule.min_delta:
            reasons.append(f"{rule.metric} is worse than the best adapter published on this held-out set "
                           f"({cand[rule.metric]:.4f} vs {_mean(best[rule.metric]):.4f}, job {best.get('job_id')}; "
                           f"{vs_best['champion_better']} example(s) lost, {vs_best['candidate_better']} won): the "
                           f"{rule.confidence:.0%} upper bound on the paired difference, "
                           f"{vs_best['upper_bound']:+.4f}, is below gate.min_delta {rule.min_delta:+.4f}")
    f_cand, f_champ = cand["forgetting"], champ["forgetting"]
    if (rule.max_forgetting is not None and f_cand is not None and f_cand > rule.max_forgetting
            and (f_champ is None or f_cand > f_champ)):
        reasons.append(f"the forgetting probe's KL to the base is {f_cand:.4f} nats/token, above "
                       f"gate.max_forgetting {rule.max_forgetting} (champion: "
                       f"{'-' if f_champ is None else f'{f_champ:.4f}'})")
    outcome = REJECTED if reasons else PROMOTED
    why = "; ".join(reasons) if reasons else (
        f"not worse than the champion: {rule.metric} {cand[rule.metric]:.4f} vs {champ[rule.metric]:.4f} "
        f"(upper bound {paired['upper_bound']:+.4f} >= min_delta {rule.min_delta:+.4f})")
    out = {"outcome": outcome, "reason": why, "metric": rule.metric, "min_delta": rule.min_delta,
           "max_forgetting": rule.max_forgetting, "paired": paired, "champion": champ, "candidate": cand}
    if best is not None:
        out["best"] = {**summary(best), "job_id": best.get("job_id"), "generation_id": best.get("generation_id"),
                       "paired": vs_best}
    return out


# ------------------------------------------------------------------------------------------------ the streak
def history_step(acc: tuple[int, dict | None], e: dict) -> tuple[int, dict | None]:
    """One line of ``status/history.jsonl`` folded into (rejections in a row, the newest line with a decision)."""
    n, last = acc
    if e.get("kind") == STREAK_RESET:
        n = 0
    elif e.get("kind") is None and e.get("state") == "done":
        if e.get("result") == REJECTED:
            n += 1
        elif e.get("result") == "ok":
            n = 0
    return n, (e if isinstance(e.get("gate"), dict) else last)


def fold_history(history: Iterable[dict]) -> tuple[int, dict | None]:
    acc: tuple[int, dict | None] = (0, None)
    for e in history:
        if isinstance(e, dict):
            acc = history_step(acc, e)
    return acc


def rejections_in_row(history: Iterable[dict]) -> int:
    """Rejected jobs since the last published one (or the last reset), from ``status/history.jsonl``'s lines."""
    return fold_history(history)[0]


def last_decision(history: Iterable[dict]) -> dict | None:
    """The newest job line of the history that carries a gate decision."""
    return fold_history(history)[1]


def regressing_condition(streak: int, limit: int, ways_out: list[str]) -> dict | None:
    """The ``regressing`` condition of the home once ``limit`` candidates in a row were rejected (0: never)."""
    if not limit or streak < limit:
        return None
    return {"kind": CONDITION, "message": f"the last {streak} trained candidates were each rejected by the gate "
                                          "(worse than the live adapter): no job starts until a person looks",
            "rejections_in_row": streak, "ways_out": ways_out}


def one_line(last: dict | None, streak: int = 0) -> str:
    """``training_controller.py status``'s line for the last gate decision (``last``: the status block's)."""
    if not last:
        return "no decision yet"
    champ, cand = last.get("champion") or {}, last.get("candidate") or {}
    metric = last.get("metric") or "exact_match"
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    line = (f"job {last.get('job_id')} {last.get('outcome')}: {metric} {fmt(cand.get(metric))} vs champion "
            f"{fmt(champ.get(metric))}, forgetting {fmt(cand.get('forgetting'))}")
    if last.get("snapshot"):
        line += f", kept as {last['snapshot']}"
    return line + (f"; {streak} rejection(s) in a row" if streak else "")


def status_block(history: list[dict] | tuple[int, dict | None], *, enabled: bool, limit: int) -> dict[str, Any]:
    """The status file's ``gate`` block: the last decision, both scores and the streak (the monitor shows it).

    ``history``: its lines, or what ``fold_history`` made of them (the daemon folds only the new lines)."""
    streak, entry = history if isinstance(history, tuple) else fold_history(history)
    last = None
    if entry is not None:
        g = entry["gate"]
        last = {"job_id": entry.get("job_id"), "file": entry.get("file"), "at": entry.get("finished_at"),
                **{k: g.get(k) for k in ("outcome", "reason", "metric", "champion", "candidate", "paired",
                                         "snapshot", "seconds")}}
    return {"enabled": enabled, "last": last, "rejections_in_row": streak, "max_rejections_in_row": limit,
            "line": one_line(last, streak) if (enabled or last) else "off"}
