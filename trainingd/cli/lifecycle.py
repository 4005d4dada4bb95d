"""The model lifecycle's command lines: lineage, snapshots, rollback, adapter rotation, config approval.

    trainingd lineage            (= training_controller.py history)   the chain from the base to the adapter
    trainingd snapshot list|pin|unpin [NAME]
    trainingd rollback SNAPSHOT  the daemon paused (no job in processing/) or stopped
    trainingd promote SNAPSHOT   the same, for a candidate the gate rejected
    trainingd adapter new [--keep-as NAME]
    trainingd config approve     (= config_validator.py --approve)
    trainingd preset NAME [--yes] [--approve] | --list     (= toggle_preset.sh)
    trainingd clean [--dry-run]  the retention policy (trainingd.lifecycle.retention)

The leaves are added to ``trainingd.cli.main``'s tree through ``add_lifecycle_commands(sub, leaf)``; ``leaf`` is the
tree's own leaf builder (passed in, so this module does not import ``cli`` back). Handlers return dicts;
refusals exit 1 with ``error: ...`` (or ``{"ok": false, "error"}`` with --json).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from trainingd import exit_codes as ec
from trainingd.paths import Home


def _emit(args: argparse.Namespace, fn: Callable[[Home, argparse.Namespace], dict[str, Any]],
          text: Callable[[dict[str, Any]], str]) -> int:
    from trainingd.lifecycle.approval import ApprovalError
    from trainingd.lifecycle.presets import PresetError
    from trainingd.lifecycle.snapshots import SnapshotError

    try:
        result = fn(Home.at(args.home), args)
    except (SnapshotError, ApprovalError, PresetError, OSError, ValueError) as e:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(e)}, indent=2))
        else:
            print(f"error: {e}", file=sys.stderr)
        return ec.ERROR
    if getattr(args, "json", False):
        print(json.dumps({"ok": True, **result}, indent=2, default=str))
    else:
        print(text(result))
    return ec.OK


def _runner(fn, text):
    return lambda args: _emit(args, fn, text)


def _lineage(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from trainingd.lifecycle.snapshots import lineage

    return lineage(home)


def _lineage_text(doc: dict[str, Any]) -> str:
    from trainingd.lifecycle.snapshots import format_lineage

    return format_lineage(doc)


def _snapshot_list(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from trainingd.lifecycle.snapshots import list_snapshots

    return {"snapshots": list_snapshots(home)}


def _snapshot_pin(pinned: bool):
    def run(home: Home, args: argparse.Namespace) -> dict[str, Any]:
        from trainingd.lifecycle.snapshots import set_pinned

        path = set_pinned(home, args.name, pinned)
        return {"snapshot": path.name, "pinned": pinned,
                "message": f"snapshot {path.name} {'pinned: never pruned' if pinned else 'unpinned'}"}
    return run


def _rollback(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from trainingd.lifecycle.snapshots import rollback

    return rollback(home, args.snapshot)


def _promote(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from trainingd.lifecycle.snapshots import promote

    return promote(home, args.snapshot)


def _adapter_new(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from trainingd.lifecycle.snapshots import start_fresh_adapter

    return start_fresh_adapter(home, label=args.keep_as)


def _approve(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from trainingd.lifecycle.approval import approve

    return approve(home, who=getattr(args, "who", None))


def _preset(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from trainingd.lifecycle.presets import active_preset, apply_preset, list_presets

    if args.list or not args.name:
        active = active_preset(home)["name"]
        items = [{**p, "active": p["name"] == active} for p in list_presets(home)]
        return {"presets": items, "active": active,
                "message": "\n".join(f"{'*' if p['active'] else ' '} {p['name']}  {p['path']}" for p in items)
                or "no presets"}
    return apply_preset(home, args.name, yes=args.yes, approve=args.approve, who=args.who)


def _clean(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from trainingd.config import ConfigError, load_config
    from trainingd.lifecycle.retention import clean

    try:
        cfg = load_config(home.config)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return clean(home, cfg, dry_run=args.dry_run)


def _message(result: dict[str, Any]) -> str:
    return result["message"]


HISTORY_TEXT = "print the chain from the base model to the current adapter: files trained, in order, with losses"


def add_history_command(sub: argparse._SubParsersAction, leaf: Callable[..., argparse.ArgumentParser],
                        name: str = "history") -> None:
    leaf(sub, name, HISTORY_TEXT, "", _runner(_lineage, _lineage_text))


def add_lifecycle_commands(sub: argparse._SubParsersAction, leaf: Callable[..., argparse.ArgumentParser],
                           shared: Callable[[str, bool], argparse.ArgumentParser]) -> None:
    """lineage, snapshot, rollback, adapter, config: ``trainingd``'s model lifecycle commands."""
    add_history_command(sub, leaf, "lineage")
    parents = [shared("--home", True), shared("--json", True)]
    fmt = argparse.RawDescriptionHelpFormatter

    def group(name: str, text: str) -> argparse._SubParsersAction:
        p = sub.add_parser(name, help=text, description=text, parents=parents, formatter_class=fmt)
        return p.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    snap = group("snapshot", "list, pin and unpin snapshots of the adapter (snapshots/)")
    from trainingd.lifecycle.snapshots import format_snapshots

    leaf(snap, "list", "list snapshots, oldest first", "",
         _runner(_snapshot_list, lambda r: format_snapshots(r["snapshots"])))
    for verb, flag in (("pin", True), ("unpin", False)):
        p = leaf(snap, verb, f"{verb} a snapshot ({'never pruned' if flag else 'pruned like the others'})", "",
                 _runner(_snapshot_pin(flag), _message))
        p.add_argument("name", metavar="SNAPSHOT")
    p = leaf(sub, "rollback", "make a snapshot the current adapter (the daemon paused with no job, or stopped; "
                              "the replaced adapter is snapshotted first, nothing is deleted)", "",
             _runner(_rollback, _message))
    p.add_argument("snapshot", metavar="SNAPSHOT", help="a folder name under snapshots/ (or a unique prefix)")
    p = leaf(sub, "promote", "publish a candidate the gate rejected (snapshots/*-rejected) as the current adapter, "
                             "by hand (as rollback; its scores become the champion's and the streak of rejections "
                             "ends)", "", _runner(_promote, _message))
    p.add_argument("snapshot", metavar="SNAPSHOT", help="a folder name under snapshots/ (or a unique prefix)")
    adapter = group("adapter", "rotate the adapter")
    p = leaf(adapter, "new", "archive the current adapter as a pinned snapshot and start a fresh one "
                             "(the way to change a locked key without consolidating)", "",
             _runner(_adapter_new, _message))
    p.add_argument("--keep-as", metavar="NAME", help="name of the archived snapshot (after its date)")
    config = group("config", "approve config changes")
    p = leaf(config, "approve", "accept config.json's locked keys for the live adapter (= config_validator.py "
                                "--approve); a LoRA shape change cannot be approved", "",
             _runner(_approve, _message))
    p.add_argument("--who", help="who approves (default: the login name)")
    p = leaf(sub, "preset", "apply presets/NAME.json to config.json atomically (= toggle_preset.sh); a preset with "
                            "its own adapter_folder swaps adapters", "", _runner(_preset, _message))
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--list", action="store_true", help="list the presets (* marks the active one)")
    p.add_argument("--yes", action="store_true", help="apply even while a job is being trained")
    p.add_argument("--approve", action="store_true", help="accept a locked-key change for the adapter it trains")
    p.add_argument("--who", help="with --approve: who approves (default: the login name)")
    p = leaf(sub, "clean", "apply the retention policy: old checkpoints, snapshots, logs, caches and done jobs' data "
                           "(never a base, current_model/, a pending or running job, or queue/failed/)", "",
             _runner(_clean, _message))
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
