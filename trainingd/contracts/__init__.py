"""Every file that one process writes and another reads: one module per file, stdlib only.

Each module's docstring is the file's schema (fields, types, units, who writes it, who reads it, how it is
written atomically); its functions are the only code in the package that reads or writes that file.

    job.py             queue/<state>/.../<job>/job.json      queue (daemon, inbox, CLI) -> daemon, CLIs
    requests.py        control/requests/*.json, .stop        controller CLI -> daemon (.stop: also trainer)
    trainer_command.py control/trainer_command.json          daemon -> trainer
    progress.py        status/trainer_progress.json          trainer -> daemon
    layer_activity.py  status/layer_activity.json            trainer -> monitor, status (summary)
    layer_history.py   status/layer_history.jsonl            trainer -> monitor (the adapter's life)
    status.py          status/training_status.json           daemon -> controller CLI, monitor
                       status/history.jsonl                  daemon -> CLIs
    result.py          <job>/result.json                     trainer -> daemon
    adapter_state.py   current_model/adapter_state.json      trainer (publish) -> daemon, next trainer
    manifest.py        <checkpoints>/step-NNNNNN/manifest.json  trainer -> trainer on resume
    checkpoint.py      current_model/checkpoints/<job>/step-NNNNNN/ + COMPLETE, micro_batch.json; the adapter
                       files and their atomic publish       trainer -> daemon, snapshots, checks, next trainer
    eval_result.py     status/eval_result.json, status/eval_set_*.jsonl, history {"kind": "eval"}
                                                            evaluator -> daemon, monitor, CLIs
    trainer_record.py  .trainer.json                         daemon -> the next daemon (orphan trainer)
    reason.py          queue/failed/<job>/reason.txt         queue (daemon, CLI) -> people, CLIs, invariants
    gate_scores.py     current_model/gate_scores.json        trainer -> the next job's trainer, trainingd promote
    autogen_state.py   status/autogen_state.json             daemon -> the next daemon (next seed, totals)
    approvals.py       logs/approvals.jsonl                  CLI (config approve, preset --approve) -> people
    hashes.py          queue/hashes.jsonl                    queue (daemon, CLI) -> people, tools (a record)
    base_hash.py       cache/base_hash.json                  daemon, CLI (approve) -> daemon, CLI (a cache)
    precision_probe.py cache/precision_probe.json            trainer -> the next trainer on this machine (a cache)

Where each file lives in a home is ``trainingd.paths.Home`` (a file inside one of its folders, such as a job
folder or ``cache/``, is named by its module's ``FILE``). Importing this package never imports torch.
"""
