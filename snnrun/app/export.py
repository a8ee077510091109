"""``snnrun export CHECKPOINT [--format nir] -o net.nir``: a trained network as a file
other tools read. NIR (neuroir.org) graphs load in Norse, snnTorch, Lava, Rockpool,
SpiNNaker2 tools and others; the LIF mapping and its limits are in
``snnrun/export/nir.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("nir",)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snnrun export", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a best.pt or last.pt file")
    parser.add_argument("--format", choices=FORMATS, default="nir")
    parser.add_argument("-o", "--output", type=Path, required=True, help="e.g. net.nir")
    parser.add_argument(
        "--approximate",
        action="store_true",
        help="export stbp.reset_form=exp as NIR's hard reset (spikes may differ)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Write the graph; exit 2 with one clear line when it cannot be exported."""
    args = parse(argv)
    from snnrun.app.api import load
    from snnrun.export.nir import ExportError, to_nir, write

    try:
        network, cfg = load(args.checkpoint)
        graph = to_nir(
            network.net,
            approximate=args.approximate,
            metadata={
                "time_steps": int(network.time_steps),
                "input_encoding": network.encoding,
                "dataset": str(cfg.dataset.name),
                "arch": str(cfg.arch.name),
            },
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write(graph, args.output)
    except (ExportError, OSError) as error:
        sys.stderr.write(f"snnrun export: error: {error}\n")
        return 2
    except Exception as error:
        if not type(error).__module__.startswith("snnrun."):
            raise
        sys.stderr.write(f"snnrun export: error: {error}\n")
        return 2
    lifs = sum(1 for name in graph.nodes if name.startswith("lif"))
    sys.stdout.write(
        f"wrote {args.output}: NIR graph, {len(graph.nodes)} nodes ({lifs} LIF layers), "
        f"T={network.time_steps}, input {network.encoding}-encoded spikes "
        f"{list(network.in_shape)} per step\n"
    )
    return 0
