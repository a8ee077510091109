"""``snnrun <verb> ...``: pops the verb and hands the rest of argv to its app."""

from __future__ import annotations

import sys

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
  compare compare the runs of a sweep (default: the newest) or an experiment:
            snnrun compare [SWEEP_ID | EXPERIMENT] [--csv F] [--md F] [--plot F.png]

Runs are tracked in outputs/mlflow.db: `make mlflow-ui` to browse and compare them.
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the verb's app; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
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
        from snnrun.app import train

        sys.argv = [f"{sys.argv[0]} train", *rest]
        train.main()
        return 0
    if verb == "eval":
        from snnrun.app import eval as eval_app

        return eval_app.main(rest)
    if verb == "export":
        from snnrun.app import export

        return export.main(rest)
    if verb == "compare":
        from snnrun.app import compare

        return compare.main(rest)
    sys.stderr.write(f"snnrun: unknown command '{verb}'\n\n{USAGE}")
    return 2
