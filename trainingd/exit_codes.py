"""Named exit codes of the trainer and the daemon (gunicorn-style): the daemon decides by name.

| code | name              | meaning                                                    | daemon does            |
|------|-------------------|------------------------------------------------------------|------------------------|
| 0    | OK                | job trained, adapter published to current_model/           | job -> done            |
| 1    | CRASH             | unexpected error (traceback in logs/training_output.log)    | retry, then -> failed  |
| 2    | USAGE             | bad command line                                            | job -> failed          |
| 3    | CONFIG_ERROR      | config.json invalid, base model missing                     | job back to queue; daemon stops (never retried in a loop) |
| 4    | DATA_ERROR        | the file cannot be trained; reason file written             | job -> failed          |
| 5    | STOPPED           | stop requested; checkpoint written                          | job -> head of its queue |
| 6    | SKIPPED           | skip requested; adapter changes discarded                   | job -> failed (skipped) |
| 7    | CHECKPOINT_MISMATCH | a checkpoint exists but belongs to other data/base/config | job -> failed          |
| 8    | ADAPTER_MISMATCH  | the adapter to continue has another base or LoRA shape      | job back to queue; daemon holds (a condition of the home) |
| 75   | ALREADY_RUNNING   | (daemon) another daemon holds the lock of this home         |                        |
"""

OK = 0
CRASH = 1
USAGE = 2
CONFIG_ERROR = 3
DATA_ERROR = 4
STOPPED = 5
SKIPPED = 6
CHECKPOINT_MISMATCH = 7
ADAPTER_MISMATCH = 8
ALREADY_RUNNING = 75

NAMES = {
    OK: "ok",
    CRASH: "crash",
    USAGE: "usage",
    CONFIG_ERROR: "config_error",
    DATA_ERROR: "data_error",
    STOPPED: "stopped",
    SKIPPED: "skipped",
    CHECKPOINT_MISMATCH: "checkpoint_mismatch",
    ADAPTER_MISMATCH: "adapter_mismatch",
    ALREADY_RUNNING: "already_running",
}


def name_of(code: int) -> str:
    if code < 0:
        return f"killed_by_signal_{-code}"
    return NAMES.get(code, f"exit_{code}")
