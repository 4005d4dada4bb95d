"""The live monitor: a read-only HTTP view of a home (status, metrics, queue, history, system, logs).

    python3 launch_live_monitor.py [--home DIR] [--host 127.0.0.1] [--port 8080]
    trainingd monitor [--home DIR] [--host 127.0.0.1] [--port 8080]

Modules: ``server`` (the fixed route map and the HTTP server), ``views`` (what each endpoint returns, as
dicts), ``metrics_log`` (incremental reading of ``status/metrics.jsonl``), ``system`` (psutil and NVML, every
call guarded), ``security`` (Host/Origin checks and the control token). Importing it never imports torch.
"""
