"""Does training help? Held-out exact match of the stack training on auto-generated SYLLO puzzles over time.

Runs the real stack on a fresh home: the reference generator (in this process, on a free port), the daemon
(a subprocess) with auto-generate, an evaluation after each job and the gate on, each with the product's
defaults otherwise (``--no-gate`` for the contrast; ``--no-curriculum`` keeps the level). A first evaluation of
the base alone gives the starting value. When ``--minutes`` have passed the daemon is stopped, and
``status/history.jsonl`` -- the published adapter's evaluations, and each gated job's candidate with its outcome --
is written to a JSON file and plotted (matplotlib: ``pip install 'trainingd[bench]'``).

    OMP_NUM_THREADS=1 .venv/bin/python bench/learning_curve.py --minutes 62 --out docs/learning_curve_gate_on.json &
    OMP_NUM_THREADS=1 .venv/bin/python bench/learning_curve.py --minutes 62 --no-gate \
        --out docs/learning_curve_gate_off.json
    .venv/bin/python bench/learning_curve.py --plot-only docs/learning_curve_gate_on.json \
        --also docs/learning_curve_gate_off.json --png docs/learning_curve.png

``--png`` may name several JSON results with ``--also`` to draw them in one figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainingd.contracts.requests import write_request  # noqa: E402 - imported once sys.path holds the repository
from trainingd.generator.server import serve_in_thread  # noqa: E402 - imported once sys.path holds the repository
from trainingd.paths import Home  # noqa: E402 - imported once sys.path holds the repository

log = logging.getLogger("learning_curve")


def read_history(home: Home) -> list[dict]:
    if not home.history.exists():
        return []
    out = []
    for line in home.history.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def run(args: argparse.Namespace) -> dict:
    root = Path(args.home or tempfile.mkdtemp(prefix="learning-curve-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    server, url = serve_in_thread("127.0.0.1", 0)
    config = {
        "base_model": args.base, "max_length": 256, "batch_size": args.batch_size, "gradient_accumulation": 1,
        "learning_rate": args.lr, "lr_scheduler": args.lr_scheduler, "warmup_ratio": args.warmup_ratio,
        "save_steps": 1000,
        "layer_stats_steps": 0, "lora": {"r": 16, "alpha": 32, "dropout": 0.0,
                                         "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"]},
        # The product's defaults for auto-generate, evaluation and the gate, but for what a bench must set:
        # the generator's address, the starting level, and each block switched on (or the gate off, for contrast).
        "auto_generate": {"enabled": True, "url": url, "level": args.level,
                          "curriculum": {"enabled": not args.no_curriculum},
                          **({"count": args.batch} if args.batch else {})},
        # With the curriculum the held-out set follows the level; without it, it stays at --level.
        "evaluation": {"after_each_job": True, "level": args.level if args.no_curriculum else None,
                       **({"count": args.eval_count} if args.eval_count else {})},
        "gate": {"enabled": not args.no_gate},
    }
    if args.lr_schedule:
        config["lr_schedule"] = args.lr_schedule
        config["stream_warmup_steps"] = args.stream_warmup_steps
    (root / "config.json").write_text(json.dumps(config, indent=2))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    home = Home.at(root)
    log.info("home %s; generator %s; base %s", root, url, args.base)
    t0 = time.time()
    # The starting value: the base alone (this also builds an embedded base once).
    if not args.no_base_eval:
        subprocess.run([sys.executable, "-m", "trainingd.train.evaluate", "--home", str(root)], cwd=REPO, env=env,
                       check=True)
    t_base = time.time()
    daemon = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(root)], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = t0 + args.minutes * 60
    seen = 0
    try:
        while time.time() < deadline and daemon.poll() is None:
            evals = [e for e in read_history(home) if e.get("kind") == "eval"]
            for e in evals[seen:]:
                log.info("%.0fs: %d examples trained, exact match %.3f, token accuracy %.3f (eval %.0fs)",
                         time.time() - t0, e["trained_examples"], e["exact_match"], e["token_accuracy"],
                         e["seconds"])
            seen = len(evals)
            time.sleep(5)
    finally:
        if daemon.poll() is None:
            write_request(home, "stop")
            try:
                daemon.wait(180)
            except subprocess.TimeoutExpired:
                daemon.kill()
        server.shutdown()
    evals = [e for e in read_history(home) if e.get("kind") == "eval"]
    jobs = [e for e in read_history(home) if e.get("state")]
    # When the curriculum moved on, the published adapter's score on the first level's held-out set too: the
    # end is then comparable with the first file's score.
    at_start_level = None
    if evals and evals[-1].get("level") not in (None, args.level):
        subprocess.run([sys.executable, "-m", "trainingd.train.evaluate", "--home", str(root), "--level",
                        str(args.level)], cwd=REPO, env=env, check=True)
        at_start_level = read_history(home)[-1]
    from datetime import datetime

    def wall(e: dict) -> float:
        return round(datetime.fromisoformat(e["finished_at"].replace("Z", "+00:00")).timestamp() - t0, 1)

    points = [{"trained_examples": e["trained_examples"], "trained_tokens": e["trained_tokens"],
               "wall_s": wall(e), "exact_match": e["exact_match"], "token_accuracy": e["token_accuracy"],
               "correct": e["correct"], "total": e["total"], "eval_seconds": e["seconds"], "level": e.get("level")}
              for e in evals]
    points_levels = [e.get("level") for e in evals]
    candidates = candidate_points(jobs, t0)
    end = ({"level": at_start_level["level"], "exact_match": at_start_level["exact_match"],
            "correct": at_start_level["correct"], "total": at_start_level["total"]} if at_start_level else None)
    return {"base_model": args.base, "level": args.level, "batch": args.batch, "eval_count": args.eval_count,
            "learning_rate": args.lr, "batch_size": args.batch_size, "minutes": args.minutes, "home": str(root),
            "lr_schedule": args.lr_schedule or "per_file", "lr_scheduler": args.lr_scheduler,
            "warmup_ratio": args.warmup_ratio, "stream_warmup_steps": args.stream_warmup_steps,
            "curriculum": not args.no_curriculum, "gate": not args.no_gate, "levels": points_levels,
            "candidates": candidates, "config": config,
            "base_eval_wall_s": round(t_base - t0, 1), "jobs_done": sum(1 for j in jobs if j["state"] == "done"),
            "jobs_failed": sum(1 for j in jobs if j["state"] == "failed"), "points": points,
            "summary": summarise(points), "end_at_start_level": end,
            "cpu_count": os.cpu_count(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def summarise(points: list[dict]) -> dict:
    """Per level of the held-out set: the published score after its first file, at the end, its best, and the
    largest fall below the best so far (a new level is a new test, so each level has its own best)."""
    out: dict[str, dict] = {}
    for p in points:
        if not p["trained_examples"]:
            continue  # the base alone
        s = out.setdefault(str(p["level"]), {"first": p["exact_match"], "best": p["exact_match"], "largest_fall": 0.0,
                                            "evaluations": 0})
        s["best"] = max(s["best"], p["exact_match"])
        s["largest_fall"] = round(max(s["largest_fall"], s["best"] - p["exact_match"]), 4)
        s["end"], s["evaluations"] = p["exact_match"], s["evaluations"] + 1
    return out


def candidate_points(jobs: list[dict], t0: float) -> list[dict]:
    """Each gated job's candidate: its held-out scores, the champion's, and whether it was published."""
    from datetime import datetime

    out, trained = [], 0
    for j in jobs:
        g = j.get("gate")
        if j.get("state") != "done":
            continue
        examples = int(j.get("kept") or j.get("examples") or 0)
        if not isinstance(g, dict) or not isinstance(g.get("candidate"), dict):
            trained += examples if j.get("result") == "ok" else 0
            continue
        cand, champ = g["candidate"], g.get("champion") or {}
        at = datetime.fromisoformat(j["finished_at"].replace("Z", "+00:00")).timestamp() - t0
        out.append({"job_id": j["job_id"], "outcome": g.get("outcome"), "reason": g.get("reason"),
                    "trained_examples": trained + examples, "wall_s": round(at, 1),
                    "exact_match": cand.get("exact_match"), "token_accuracy": cand.get("token_accuracy"),
                    "forgetting": cand.get("forgetting"), "champion_exact_match": champ.get("exact_match"),
                    "champion_forgetting": champ.get("forgetting"), "examples": cand.get("examples"),
                    "job_seconds": j.get("seconds"), "gate_seconds": g.get("seconds")})
        trained += examples if j.get("result") == "ok" else 0
    return out


def plot(results: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        pts = r["points"]
        name = (Path(r["base_model"].removeprefix("embedded:")).name + f" {r.get('lr_schedule', 'per_file')}"
                + {True: ", gate on", False: ", gate off", None: ""}[r.get("gate")])
        line, = ax1.plot([p["trained_examples"] for p in pts], [p["exact_match"] for p in pts], "o-",
                         label=f"{name}: published, exact match")
        ax2.plot([p["wall_s"] / 60 for p in pts], [p["exact_match"] for p in pts], "o-", label=name,
                 color=line.get_color())
        for prev, p in zip(pts, pts[1:]):  # a new level is a new held-out set: mark where the test changed
            if p.get("level") != prev.get("level"):
                for ax, x in ((ax1, p["trained_examples"]), (ax2, p["wall_s"] / 60)):
                    ax.axvline(x, color=line.get_color(), linestyle=":", alpha=0.7)
                    ax.annotate(f"level {p['level']}", (x, 0.02), rotation=90, fontsize=7, color=line.get_color(),
                                xytext=(2, 0), textcoords="offset points")
        for outcome, marker in (("promoted", "^"), ("rejected", "v")):
            cands = [c for c in r.get("candidates") or [] if c["outcome"] == outcome]
            if cands:
                ax1.scatter([c["trained_examples"] for c in cands], [c["exact_match"] for c in cands], marker=marker,
                            s=36, facecolors="none" if outcome == "rejected" else line.get_color(),
                            edgecolors=line.get_color(), label=f"{name}: candidate {outcome}", zorder=3)
    ax1.set_xlabel("examples trained")
    ax1.set_ylabel(f"held-out exact match ({results[0]['points'][0]['total'] if results[0]['points'] else '?'}"
                   " puzzles)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel(f"wall time (minutes on {results[0].get('cpu_count', '?')} CPU cores, incl. evaluations)")
    ax2.set_ylabel("held-out exact match")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    levels = sorted({lv for r in results for lv in r.get("levels") or [] if lv is not None})
    top = max([p["exact_match"] for r in results for p in r["points"]] + [0.0])
    for ax in (ax1, ax2):
        ax.set_ylim(0, min(1.0, top + 0.15))
    fig.suptitle(f"SYLLO puzzles (level{'s' if len(levels) > 1 else ''} {', '.join(map(str, levels)) or '?'}; "
                 f"the held-out set follows the level), LoRA r=16")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def screenshot_chart(home_dir: Path, png: Path) -> None:
    """The monitor's "Held-out accuracy" chart of a run's home, as the page draws it (Debian's chromium)."""
    from playwright.sync_api import sync_playwright

    from trainingd.monitor.browser import chart_points, wait_until, watch_page
    from trainingd.monitor.server import serve_in_thread as serve_monitor

    server, _ = serve_monitor(Home.at(home_dir), "127.0.0.1", 0)
    try:
        with sync_playwright() as pw, watch_page(pw, f"http://127.0.0.1:{server.server_address[1]}/") as watch:
            wait_until(lambda: chart_points(watch.page, "accuracy") > 0, "the accuracy chart")
            watch.page.locator("#chart-accuracy").locator("xpath=..").screenshot(path=str(png))
    finally:
        server.shutdown()
        server.server_close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="embedded:smollm2-135m")
    p.add_argument("--minutes", type=float, default=38.0, help="wall-clock budget, the base evaluation included")
    p.add_argument("--level", type=int, default=1)
    p.add_argument("--batch", type=int, help="puzzles per generated file (default: auto_generate.count's)")
    p.add_argument("--eval-count", type=int, help="held-out puzzles (default: evaluation.count's)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr-schedule", choices=["per_file", "stream"], help="lr_schedule (default: the product's)")
    p.add_argument("--lr-scheduler", default="cosine", help="lr_scheduler of the per-file policy")
    p.add_argument("--warmup-ratio", type=float, default=0.03, help="warmup_ratio of the per-file policy")
    p.add_argument("--stream-warmup-steps", type=int, default=10, help="stream_warmup_steps of the stream policy")
    p.add_argument("--no-base-eval", action="store_true", help="skip the evaluation of the base alone")
    p.add_argument("--no-curriculum", action="store_true", help="keep the level (auto_generate.curriculum off)")
    p.add_argument("--no-gate", action="store_true", help="publish every candidate (gate.enabled off)")
    p.add_argument("--home", help="home folder (default: a new temporary one)")
    p.add_argument("--out", type=Path, help="write the result JSON here")
    p.add_argument("--png", type=Path, help="plot the result (and --also results) here")
    p.add_argument("--also", type=Path, action="append", default=[], help="another result JSON to plot")
    p.add_argument("--plot-only", type=Path, help="plot this result JSON without running")
    p.add_argument("--monitor-png", type=Path, help="also save the monitor's accuracy chart of the run's home here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.plot_only:
        result = json.loads(args.plot_only.read_text())
    else:
        result = run(args)
        text = json.dumps(result, indent=2)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        print(text)
    if args.png:
        plot([result] + [json.loads(a.read_text()) for a in args.also], args.png)
    if args.monitor_png:
        screenshot_chart(Path(result["home"]), args.monitor_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
