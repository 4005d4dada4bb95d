"""``config_validator.py``: the config check of ``trainingd validate``, plus the home check and ``--approve``.

    python3 config_validator.py [--home DIR | FILE] [--json]
    python3 config_validator.py --approve [--who NAME] [--home DIR]

The parser is ``trainingd.cli.main.validator_parser`` with two options added; a home (no FILE) is also checked
with ``trainingd.lifecycle.approval.check_home`` and every problem is listed (exit 3).
"""

from __future__ import annotations

import argparse
import json
import sys

from trainingd import exit_codes as ec
from trainingd.lifecycle.approval import ApprovalError, approve, check_home, missing_folders
from trainingd.cli.main import home_problem, validate_config, validator_parser
from trainingd.cli.tree import quiet_broken_pipe, setup_logging
from trainingd.paths import Home


def build_parser() -> argparse.ArgumentParser:
    p = validator_parser()
    p.add_argument("--approve", action="store_true",
                   help="accept config.json's locked keys for the live adapter (who/what/when go to "
                        "logs/approvals.jsonl); a LoRA shape change cannot be approved: trainingd adapter new")
    p.add_argument("--who", help="with --approve: who approves (default: the login name)")
    p.set_defaults(run=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    if args.file is not None and (args.home is not None or args.approve):
        args.command_parser.error("argument file: not allowed with argument --home or --approve")
    if args.approve:
        try:
            result = {"ok": True, **approve(Home.at(args.home), who=args.who)}
        except ApprovalError as e:
            result = {"ok": False, "error": str(e)}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(result.get("message") or f"error: {result['error']}",
                  file=sys.stdout if result["ok"] else sys.stderr)
        return ec.OK if result["ok"] else ec.ERROR
    if args.file is not None:
        from trainingd.cli.main import _run_validate

        return _run_validate(args)
    home = Home.at(args.home)
    result = validate_config(home.config, home.root)
    if result["ok"]:
        problems = check_home(home)
        result.update(problems=problems, missing_folders=missing_folders(home))
        if problems:
            result.update(ok=False, error="\n".join(f"problem: {p}" for p in problems))
    else:
        result["problems"] = [result["error"]]
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["ok"]:
        from trainingd.cli.formatting import format_validation

        print(format_validation(result))
        if result["missing_folders"]:
            print(f"note: {len(result['missing_folders'])} runtime folder(s) not created yet "
                  "(trainingd init or the daemon creates them)")
    else:
        print(result["error"], file=sys.stderr)
        if len(result["problems"]) > 1:
            print(f"{len(result['problems'])} problems", file=sys.stderr)
    return ec.OK if result["ok"] else ec.CONFIG_ERROR


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = home_problem(args.home)
    if problem:
        parser.error(problem)
    return args.run(args)
