"""``snnrun <verb> ...``: pops the verb and hands the rest of argv to its app."""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
from types import ModuleType
from typing import NoReturn

USAGE = """usage: snnrun <command> [args]

Train spiking neural networks with STBP (Wu et al. 2018).

commands:
  train   train a network; Hydra overrides, e.g.
            snnrun train dataset=nmnist arch=cnn stbp.decay=0.3
            snnrun train -m stbp.decay=0.1,0.2,0.3 seed=0,1,2   (a sweep)
            snnrun train experiment=paper_mnist_mlp
            snnrun train --help        (config groups and options)
            snnrun train --cfg job     (print the composed config)
  eval    evaluate a checkpoint on the test (or validation) set:
            snnrun eval outputs/train/<time>/checkpoints/best.pt
            snnrun eval <checkpoint> --split val --limit 1000 --repeats 5 --json o.json
  export  write a trained network as a NIR graph (neuromorphic tools):
            snnrun export <checkpoint> [--format nir] -o net.nir
  reproduce  run a paper row over its seeds, PASS/FAIL against its band:
            snnrun reproduce mnist-mlp [--quick] [--seeds 0,1,2] [overrides]
  gradcheck  STBP gradient vs an exact one, surrogate window vs threshold:
            snnrun gradcheck [overrides, as for train]
  bench   training/eval throughput and memory vs snnTorch, SpikingJelly, Norse:
            snnrun bench [--configs mlp10,mlp30,cnn10] [--rounds 2]
  compare compare the runs of a sweep (default: the newest) or an experiment:
            snnrun compare [SWEEP_ID | EXPERIMENT] [--csv F] [--md F] [--plot F.png]
  sync    send what a run kept on disk while its MLflow server was away:
            snnrun sync outputs/train/<time>
  runs    list runs left RUNNING by a killed process; --clean marks them KILLED:
            snnrun runs [--clean] [--tracking-uri URI]

Runs go to ./outputs/ in the current folder, tracked in ./outputs/mlflow.db:
`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` (or `make mlflow-ui`).
"""


EXIT_INTERRUPTED = 130
APPS = ("eval", "reproduce", "gradcheck", "bench", "export", "compare", "sync", "runs")
"""Verbs whose module ``snnrun.app.<verb>`` has ``main(args) -> int``."""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the verb's app; returns the exit status.

    Ctrl-C before a run's own guard is in place (imports, config composition: the
    first seconds) ends with one line and status 130 instead of a traceback; after it,
    the run's guard closes the run and asks for 130 too (``SystemExit(130)``).
    """
    try:
        return _dispatch(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        sys.stderr.write(
            "snnrun: interrupted during start-up, before training began; nothing was "
            "run or saved. Run the command again to start.\n"
        )
        _exit_interrupted()
    except SystemExit as stop:
        if stop.code == EXIT_INTERRUPTED:
            _exit_interrupted()
        raise


def _exit_interrupted() -> NoReturn:
    """Leave with status 130, whatever the interpreter remembers of the interrupt.

    A KeyboardInterrupt that passed through C code run by ``PyRun_String`` (as some
    extension imports do) leaves CPython's "unhandled Ctrl-C" flag set, and at exit
    the interpreter then kills itself with SIGINT (status -2) although the program
    asked for 130 -- seen under load in
    tests/app/test_reliability.py::test_ctrl_c_during_start_up, both before and after
    the run guard. So: run the exit handlers (logging, tracking clients) ourselves,
    flush, and end the process with 130 directly.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _load(module_name: str) -> ModuleType:
    """Import ``module_name`` (an app: torch, Hydra, MLflow, seconds) with Ctrl-C held
    until the import is complete, then raise it as KeyboardInterrupt.

    A KeyboardInterrupt raised inside a C extension's initialisation can come out as
    another error: "ImportError: cannot load module more than once per process" from
    numpy, under torch's import, was seen in
    tests/app/test_reliability.py::test_ctrl_c_during_start_up.
    """
    pending: list[int] = []
    try:
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.SIG_IGN:  # Ctrl-C is ignored here: leave it so
            return importlib.import_module(module_name)
        signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    except ValueError:  # not the main thread: no signal handling to change
        return importlib.import_module(module_name)
    try:
        module = importlib.import_module(module_name)
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt
    return module


def _dispatch(args: list[str]) -> int:
    """Run the verb named by ``args[0]`` with the rest of ``args``."""
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    verb, rest = args[0], args[1:]
    if verb == "train" and ("--help" in rest or "-h" in rest):
        from snnrun.app.help import train_help

        sys.stdout.write(train_help())
        return 0
    if verb == "train":
        from snnrun.app.runtime import tune_allocator

        tune_allocator()
        train = _load("snnrun.app.train")
        sys.argv = [f"{sys.argv[0]} train", *rest]
        train.main()
        return 0
    if verb in APPS:
        return _load(f"snnrun.app.{verb}").main(rest)
    sys.stderr.write(f"snnrun: unknown command '{verb}'\n\n{USAGE}")
    return 2
