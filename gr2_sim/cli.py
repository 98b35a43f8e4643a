"""The ``gr2-sim`` command: one subcommand per stage of the pipeline.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``; modules
are imported only when their command runs, so ``gr2-sim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from gr2_sim.errors import UserError

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("gr2_sim.collect", "run a scripted expert and store demonstrations (HDF5)"),
    "synth": ("gr2_sim.synth", "render synthetic non-robot physics video (HDF5)"),
    "describe": ("gr2_sim.data", "summarise dataset files: kind, env, episodes, frames, splits"),
    "label": ("gr2_sim.label", "give action-free robot video the actions of an inverse-dynamics model (HDF5)"),
    "train": ("gr2_sim.train", "train one phase: video | robot-video | action (or the idm / bc models)"),
    "eval": ("gr2_sim.evaluate", "roll a policy out on test seeds: success rate with 95% CI, latency, videos"),
    "sweep": ("gr2_sim.sweep", "success vs number of demos, with and without video pre-training"),
    "quickstart": ("gr2_sim.quickstart", "the whole pipeline on small defaults: data, three phases, report"),
    "bench": ("gr2_sim.bench", "measure env, rendering and training speed on this machine"),
    "experiment": ("gr2_sim.experiments", "the lesson's studies: loss-correlation | transfer | attention | "
                   "head-vs-idm | physics-probes | inputs | palette | video-quality | capabilities"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Before torch starts OpenMP (the command modules import torch): idle OpenMP threads sleep instead of spinning,
    # so a job that shares its cores with another does not collapse (docs/benchmarks.md, "Threads"). A value the
    # user set stays.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Build only the parser that is needed: importing every command module costs seconds (torch).
    if argv and argv[0] in COMMANDS:
        parser = argparse.ArgumentParser(prog=f"gr2-sim {argv[0]}", description=COMMANDS[argv[0]][1])
        module = importlib.import_module(COMMANDS[argv[0]][0])
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
    else:
        parser = argparse.ArgumentParser(prog="gr2-sim", description=__doc__.splitlines()[0])
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text.replace("%", "%%"))  # argparse %-formats help
        parser.parse_args(argv)
        parser.print_help()
        return 2
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"gr2-sim {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gr2-sim {argv[0]}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
