"""The command lines are one argparse tree: shared options anywhere, one dispatcher, each module imports alone.

    ./run_tests.sh tests/test_cli_tree.py -q
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import chat_lines, write_jsonl
from trainingd import exit_codes
from trainingd.cli import main as cli

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "trainingd"
PY = sys.executable
CLI_MODULES = ["trainingd.cli.main", "trainingd.cli.queue", "trainingd.cli.controller", "trainingd.cli.formatting",
               "trainingd.cli.tree", "trainingd.cli.home", "trainingd.cli.services", "trainingd.cli.processes",
               "trainingd.exit_codes", "trainingd.logs"]


def tool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``training_controller.py ...`` / ``trainingd ...`` as a user does (``trainingd`` via ``-m``)."""
    cmd = [PY, "-m", "trainingd", *args[1:]] if args[0] == "trainingd" else [PY, str(REPO / args[0]), *args[1:]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TRAININGD_HOME", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    h = tmp_path_factory.mktemp("tree") / "home"
    assert tool("trainingd", "init", "--home", str(h)).returncode == 0
    return h


# --- --home and --json before or after the subcommand ----------------------------------------------

def _where(home: Path, command: list[str], options: list[str]) -> dict[str, list[str]]:
    """The same command line with the shared options before, after, and split around the subcommand."""
    script, *sub = command
    return {"before": [script, *options, *sub], "after": [script, *sub, *options],
            "split": [script, options[0], options[1], *sub, *options[2:]]}


@pytest.mark.parametrize("position", ["before", "after", "split"])
@pytest.mark.parametrize("command, key", [
    (["training_controller.py", "status"], "daemon_running"),
    (["training_queue.py", "list"], "jobs"),
    (["training_queue.py", "status"], "counts"),
    (["trainingd", "status"], "daemon_running"),
    (["trainingd", "queue", "list"], "jobs"),
])
def test_home_and_json_work_before_or_after_the_subcommand(home, tmp_path, command, key, position):
    # Run from an empty folder: a --home that got lost would fall back to the current directory.
    argv = _where(home, command, ["--home", str(home), "--json"])[position]
    r = tool(*argv, cwd=tmp_path)
    assert r.returncode == 0, (argv, r.stderr)
    out = json.loads(r.stdout)
    assert key in out
    assert not (tmp_path / "queue").exists()


@pytest.fixture(scope="module")
def queued_home(tmp_path_factory) -> Path:
    """A home with one pending job."""
    h = tmp_path_factory.mktemp("queued") / "home"
    assert tool("trainingd", "init", "--home", str(h)).returncode == 0
    data = write_jsonl(h.parent / "one.jsonl", chat_lines(2))
    r = tool("training_queue.py", "add", str(data), "--home", str(h))
    assert r.returncode == 0, r.stderr
    return h


@pytest.mark.parametrize("argv", [
    ["training_controller.py", "--home", "{home}", "status"],
    ["training_controller.py", "status", "--home", "{home}"],
    ["trainingd", "--home", "{home}", "status"],
    ["trainingd", "queue", "--home", "{home}", "status"],
])
def test_home_given_anywhere_is_the_home_shown(queued_home, tmp_path, argv):
    # Run from an empty folder: a lost --home would show its empty queue (pending 0) instead of the job.
    r = tool(*[a.format(home=queued_home) for a in argv], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"\bpending\s+1\b", r.stdout), r.stdout
    if "status" == argv[-1] and "queue" not in argv:
        assert f"home:      {queued_home}\n" in r.stdout, r.stdout
    assert not (tmp_path / "queue").exists()


def test_config_validator_takes_home_before_or_after_json(home, tmp_path):
    for argv in (["--home", str(home), "--json"], ["--json", "--home", str(home)]):
        r = tool("config_validator.py", *argv, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["path"] == str(home / "config.json")
    r = tool("trainingd", "--home", str(home), "validate", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["ok"] is True


def test_a_subcommand_without_the_option_keeps_the_value_given_before_it(home, tmp_path):
    # The subparser's own default (no --json) must not overwrite --json given before the subcommand.
    r = tool("training_controller.py", "--json", "pause", "--home", str(home), cwd=tmp_path)
    assert r.returncode == exit_codes.ERROR
    assert json.loads(r.stdout)["message"].startswith("no daemon running")


def test_watch_and_json_are_refused_together_wherever_json_is(home):
    for argv in (["status", "--json", "--watch"], ["--json", "status", "--watch"]):
        r = tool("training_controller.py", *argv, "--home", str(home))
        assert r.returncode == exit_codes.USAGE
        assert "not allowed" in r.stderr


def test_validator_refuses_a_file_and_home_together(home):
    r = tool("trainingd", "--home", str(home), "validate", str(home / "config.json"))
    assert r.returncode == exit_codes.USAGE and "not allowed with argument --home" in r.stderr


# --- one tree ----------------------------------------------------------------------------------------

def _leaves(parser) -> dict[str, object]:
    """``{"queue list": <parser>, ...}`` for every leaf command of an argparse tree."""
    found: dict[str, object] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                inner = _leaves(sub)
                found.update({f"{name} {k}".strip(): v for k, v in inner.items()} if inner else {name: sub})
    return found


def _options(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_trainingd_holds_each_scripts_commands_with_the_same_options():
    tree = _leaves(cli.trainingd_parser())
    for prefix, script in (("", cli.controller_parser()), ("queue ", cli.queue_parser())):
        for name, leaf in _leaves(script).items():
            assert f"{prefix}{name}" in tree, name
            assert _options(tree[f"{prefix}{name}"]) == _options(leaf), name
            assert callable(tree[f"{prefix}{name}"].get_default("run")), name
    assert _options(tree["validate"]) >= _options(cli.validator_parser()) - {"--version"}


# --- exit codes: one table ---------------------------------------------------------------------------

HELP_CASES = [
    (["training_controller.py"], exit_codes.CONTROLLER_HELP),
    (["training_controller.py", "status"], exit_codes.CONTROLLER_HELP),
    (["training_controller.py", "pause"], exit_codes.CONTROLLER_HELP),
    (["training_queue.py"], exit_codes.QUEUE_HELP),
    (["training_queue.py", "add"], exit_codes.QUEUE_HELP),
    (["training_queue.py", "remove"], exit_codes.QUEUE_HELP),
    (["config_validator.py"], exit_codes.VALIDATOR_HELP),
    (["training_daemon.py"], exit_codes.DAEMON_HELP),
    (["trainingd"], exit_codes.TRAININGD_HELP),
    (["trainingd", "init"], exit_codes.INIT_HELP),
    (["trainingd", "skip"], exit_codes.CONTROLLER_HELP),
    (["trainingd", "queue"], exit_codes.QUEUE_HELP),
    (["trainingd", "queue", "list"], exit_codes.QUEUE_HELP),
    (["trainingd", "validate"], exit_codes.VALIDATOR_HELP),
    (["launch_live_monitor.py"], exit_codes.MONITOR_HELP),
    (["trainingd", "monitor"], exit_codes.MONITOR_HELP),
    (["trainingd", "plan"], exit_codes.PLAN_HELP),
    (["trainingd", "node"], exit_codes.NODE_HELP),
]


@pytest.mark.parametrize("argv, table", HELP_CASES, ids=[" ".join(a) for a, _ in HELP_CASES])
def test_every_help_ends_with_its_exit_code_table(argv, table):
    r = tool(*argv, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(table), r.stdout[-600:]


def test_the_trainer_help_ends_with_the_trainer_table():
    # In-process: the trainer package is imported once here rather than once more in a subprocess.
    from trainingd.train.__main__ import build_parser

    assert build_parser().format_help().rstrip().endswith(exit_codes.TRAINER_HELP)


def test_no_second_copy_of_an_exit_code_table():
    copies = [str(p.relative_to(REPO)) for p in [*PACKAGE.rglob("*.py"), *REPO.glob("*.py")]
              if "exit codes:" in p.read_text() or "EXIT_TABLE = \"\"\"" in p.read_text()]
    assert copies == ["trainingd/exit_codes.py"]


def _readme_exit_rows() -> dict[str, set[int]]:
    text = (REPO / "docs" / "operations.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[int]] = {}
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        commands, codes = line.strip("|").split("|")[:2]
        numbers = {int(n) for n in re.findall(r"(?:^|;) *(\d+) ", codes.strip())}
        for command in commands.split("`")[1::2]:
            rows[command] = numbers
    return rows


def test_the_documented_exit_codes_agree_with_the_table():
    rows = _readme_exit_rows()
    shown = {"train.py": "train.py", "training_daemon.py": "training_daemon.py",
             "config_validator.py": "config_validator.py", "launch_live_monitor.py": "launch_live_monitor.py",
             "trainingd plan": "trainingd plan", "trainingd node": "trainingd node"}
    for command, key in shown.items():
        assert rows[command] == {r.code for r in exit_codes.TABLES[key]}, command
    both = {r.code for r in exit_codes.CONTROLLER} | {r.code for r in exit_codes.QUEUE}
    assert rows["training_controller.py"] == rows["training_queue.py"] == both


# --- each command-line module imports alone (no circle anywhere: tests/test_layout.py) ----------------

@pytest.mark.parametrize("module", CLI_MODULES)
def test_each_command_line_module_imports_alone_in_a_fresh_interpreter(module):
    r = subprocess.run([PY, "-c", f"import {module}"], capture_output=True, text=True, cwd=REPO, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
