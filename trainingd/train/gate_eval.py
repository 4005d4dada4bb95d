"""The gate's scores, in the trainer, on the model it already holds: held-out set and forgetting probe.

``trainingd.train.recipe.run`` opens the gate with :func:`open_gate` (a ``Gate`` when ``gate.enabled``, daemon mode)
and calls ``champion()`` right after setup (the stored scores of the live adapter, or the model in memory scored
before its first step); after the last step :func:`publish_or_keep` has ``judge()`` score the candidate (then
``trainingd.lifecycle.gate.decide``) and publishes it, or keeps a rejected one as a snapshot. The held-out set is
the home's (``evaluate.load_eval_set``: ``evaluation.eval_file`` or the generator's fixed ``/eval`` puzzles kept in
``status/``); the probe is ``probe_prompts.PROBE``, scored as the mean per-token KL(base || model) where the base
side is the same model under peft's ``disable_adapter()``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from trainingd import exit_codes
from trainingd.contracts.adapter_state import generation_id
from trainingd.contracts.gate_scores import matches, read_gate_scores, write_gate_scores
from trainingd.contracts.job import now_iso
from trainingd.lifecycle import gate as rule_
from trainingd.paths import Home
from trainingd.train.control import RunExit
from trainingd.train.evaluate import evaluate_model, load_eval_set
from trainingd.train.probe_prompts import PROBE

log = logging.getLogger(__name__)

CHAMPION_FILE = "gate_champion.json"  # in the job's checkpoint folder: the champion scored before step 1


def probe_sha256(records: list[dict] = PROBE) -> str:
    return hashlib.sha256("".join(json.dumps(r, sort_keys=True) for r in records).encode()).hexdigest()


@torch.inference_mode()
def forgetting(model, tok, records: list[dict], *, batch_size: int = 8) -> list[float]:
    """Per record: mean over its tokens of KL(base || model), the base being ``model`` with its adapter disabled."""
    model.eval()
    dev = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    rows = [tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"]
            for r in records]
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, x in enumerate(chunk):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        cand = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        with model.disable_adapter():
            base = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        kl = (base.exp() * (base - cand)).sum(-1).clamp(min=0) * mask
        out.extend((kl.sum(-1) / mask.sum(-1)).tolist())
    return [round(v, 8) for v in out]


def score(model, tok, records: list[dict], *, batch_size: int, max_new_tokens: int, autocast=None) -> dict[str, Any]:
    """Per-example scores of ``model``: exact match and token accuracy on ``records``, forgetting on the probe."""
    import contextlib

    t0 = time.monotonic()
    with autocast() if autocast is not None else contextlib.nullcontext():
        held = evaluate_model(model, tok, records, batch_size=batch_size, max_new_tokens=max_new_tokens)
        kl = forgetting(model, tok, PROBE)
    return {"exact_match": held["per_example"]["exact_match"],
            "token_accuracy": [round(v, 6) for v in held["per_example"]["token_accuracy"]],
            "forgetting": kl, "seconds": round(time.monotonic() - t0, 3), "samples": held["samples"][:3]}


class Gate:
    """The champion/challenger gate of one job (main process, one copy of the model)."""

    def __init__(self, recipe, home: Home):
        self.recipe = recipe
        cfg = recipe.cfg
        self.rule = rule_.Rule(metric=cfg.gate.metric, min_delta=cfg.gate.min_delta,
                               max_forgetting=cfg.gate.max_forgetting, confidence=cfg.gate.confidence)
        self.records, self.eval_set = load_eval_set(home, cfg)
        self.key = {"base_model_hash": recipe.base_hash, "eval_set_sha256": self.eval_set["sha256"],
                    "probe_sha256": probe_sha256()}
        self.champion_doc: dict | None = None
        self.champion_source: str | None = None

    def _score(self) -> dict[str, Any]:
        ev = self.recipe.cfg.evaluation
        doc = score(self.recipe.model, self.recipe.tokenizer, self.records, batch_size=ev.batch_size,
                    max_new_tokens=ev.max_new_tokens, autocast=self.recipe._autocast)
        self.recipe.model.train()
        return doc

    def champion(self) -> None:
        """The live adapter's scores: stored beside it, or kept from this job's start, or scored now (in memory,
        before the first step; the model is then exactly the champion)."""
        spec, recipe = self.recipe.spec, self.recipe
        key = {"generation_id": generation_id(recipe.prev_state), **self.key}
        for folder, source in ((Path(spec.output_dir), "stored"), (Path(spec.checkpoint_dir), "job start")):
            name = None if source == "stored" else CHAMPION_FILE
            doc = read_gate_scores(folder) if name is None else _read(folder / name)
            if matches(doc, **key):
                self.champion_doc, self.champion_source = doc, source
                log.info("gate: champion scores %s (%s)", source, rule_.summary(doc))
                return
        if recipe.resume_from is not None:
            log.warning("gate: resumed from a checkpoint with no score of the champion; this candidate is promoted")
            return
        recipe.progress.set_status("evaluating", "gate: scoring the live adapter (champion) before training")
        doc = {**key, "job_id": spec.job_id, "scored_at": now_iso(), **self._score()}
        self.champion_doc, self.champion_source = doc, "scored at job start"
        Path(spec.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        _write(Path(spec.checkpoint_dir) / CHAMPION_FILE, doc)
        write_gate_scores(spec.output_dir, doc)  # the champion is scored once, not at every job
        log.info("gate: champion scored in %.1fs: %s", doc["seconds"], rule_.summary(doc))

    def judge(self) -> tuple[dict, dict]:
        """Score the candidate (the model as trained) and decide. Returns (decision, candidate scores)."""
        self.recipe.progress.set_status("evaluating", "gate: scoring the candidate against the champion")
        cand = {**self.key, "job_id": self.recipe.spec.job_id, "scored_at": now_iso(), **self._score()}
        if self.champion_doc is None:
            decision = {"outcome": rule_.PROMOTED, "reason": "no score of the champion (the job resumed from a "
                        "checkpoint made before the gate was on): promoted unchecked", "metric": self.rule.metric,
                        "champion": None, "candidate": rule_.summary(cand)}
        else:
            decision = rule_.decide(self.champion_doc, cand, self.rule)
        decision["champion_source"] = self.champion_source
        decision["seconds"] = {"candidate": cand["seconds"],
                               "champion": self.champion_doc.get("seconds") if self.champion_source ==
                               "scored at job start" else 0.0}
        decision["eval_set"] = self.eval_set
        log.info("gate: %s: %s", decision["outcome"], decision["reason"])
        return decision, cand


def open_gate(recipe) -> Gate | None:
    """The gate of this job, or None (off, standalone, or a sharded model that one process cannot score)."""
    spec = recipe.spec
    if not recipe.cfg.gate.enabled or spec.home is None:
        return None
    if recipe.fsdp:
        log.warning("gate: not applied under distributed.strategy fsdp (no process holds the whole model)")
        return None
    if not recipe.is_main:
        return None
    try:
        return Gate(recipe, Home.at(spec.home))
    except (OSError, ValueError) as e:  # no held-out set to judge with: a config problem, never retried in a loop
        raise RunExit(exit_codes.CONFIG_ERROR, f"gate.enabled needs a held-out set (evaluation.eval_file or the "
                                               f"generator's /eval): {e}") from None


def publish_or_keep(recipe, gate: Gate | None, final: Path) -> tuple[dict | None, str]:
    """Judge the candidate in ``final`` (with a gate) and publish it, or keep it as a rejected snapshot.

    Returns the gate's decision (None without a gate) and the status detail that says which happened.
    """
    decision, scores = gate.judge() if gate is not None else (None, None)
    if decision is not None and decision["outcome"] == "rejected":
        keep_rejected(recipe, final, decision, scores)
        return decision, "rejected by the gate; kept as a snapshot"
    state = recipe.publish(final)
    if scores is not None:
        # The new champion's scores, beside it: the next job compares with them without scoring again.
        best = rule_.best_after_promotion(gate.champion_doc, scores, gate.rule.metric)
        write_gate_scores(recipe.spec.output_dir, {**scores, "generation_id": state["generation_id"],
                                                   **({"best": best} if best else {})})
    return decision, "published"


def keep_rejected(recipe, final: Path, decision: dict, scores: dict | None) -> None:
    """A rejected candidate is not published: it becomes a pinned snapshot marked rejected (nothing is lost)."""
    from trainingd.lifecycle import snapshots

    spec = recipe.spec
    state = recipe.next_adapter_state()
    trained_file = {"job_id": spec.job_id, "name": Path(spec.dataset).name, "sha256": recipe.data_sha256,
                    "lines": None, "trained_tokens": recipe.state.trained_tokens}
    snap = snapshots.keep_rejected(Home.at(spec.home), final, state, trained_file=trained_file, decision=decision,
                                   scores={**scores, "generation_id": state["generation_id"]} if scores else None,
                                   config=recipe.cfg.to_dict(), result=recipe.summary())
    decision["snapshot"] = snap.name


def _read(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _write(path: Path, doc: dict) -> None:
    from trainingd.atomic_ops import atomic_write_json

    atomic_write_json(path, {"schema_version": 1, **doc})
