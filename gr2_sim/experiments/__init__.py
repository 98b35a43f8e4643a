"""``gr2-sim experiment NAME --out DIR``: the lesson's studies, one module each.

    loss-correlation   does held-out video error track action error and rollout success during phase 3?
    transfer           success vs demos with and without video pre-training; the sample-efficiency gain
    attention          spatial (own frame) vs temporal (other frames) attention, per layer and head
    head-vs-idm        action head vs inverse dynamics on generated / real frames: error, success, latency
    physics-probes     does phase 1 predict occlusion, falling and bouncing better than robot-only training?
    inputs             what a trained policy looks at: action error with the image, instruction or state shuffled
    palette            how far each named color stands out from the table at the policy's image size
    video-quality      do the predicted frames beat copying the current frame over the pixels that change?
    capabilities       occlusion, contact, gravity, deformables, tool use: probes where copying the frame is wrong
    keypoint-probe     do a model's keypoints know where the objects are? a linear probe to their positions

Every experiment writes ``DIR/summary.json`` (its numbers, the exact command, wall time, machine) and PNG
figures into DIR; finished pieces (datasets, training runs, rollouts) are skipped, so rerunning the same
command resumes a killed experiment. Sizes (env, demos, steps, preset, episodes, seeds) are options whose
defaults are meant for a real CPU run; each module's docstring gives its budget.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, one-line help)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "loss-correlation": ("gr2_sim.experiments.loss_correlation",
                         "phase 3: video vs action loss (train and held out) vs rollout success at checkpoints"),
    "transfer": ("gr2_sim.experiments.transfer",
                 "success vs demos, pre-trained minus scratch (Newcombe CI), sample-efficiency gain"),
    "attention": ("gr2_sim.experiments.attention",
                  "within-frame (spatial) vs cross-frame (temporal) attention per layer and head"),
    "head-vs-idm": ("gr2_sim.experiments.head_vs_idm",
                    "action head (1 pass, DDIM) vs inverse dynamics (generated, real frames): error, success, latency"),
    "physics-probes": ("gr2_sim.experiments.physics_probes",
                       "future-frame error inside the object's mask on occlusion / unsupported / wall-bounce probes"),
    "inputs": ("gr2_sim.experiments.inputs",
               "what a trained policy looks at: held-out action error with one input shuffled across windows"),
    "palette": ("gr2_sim.experiments.palette",
                "how far each named color stands out from the table (RGB distance, hue gap) at the image size"),
    "video-quality": ("gr2_sim.experiments.video_quality",
                      "predicted frames vs copying the current frame, MSE over the pixels that change"),
    "capabilities": ("gr2_sim.experiments.capabilities",
                     "five capability probes (reappear, contact, support, rope, tool) vs copy-last-frame and oracle"),
    "keypoint-probe": ("gr2_sim.experiments.keypoint_probe",
                       "held-out R^2 of a linear probe from a run's keypoints to the object and goal positions"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment", metavar="NAME", required=True)
    for name, (module_name, help_text) in EXPERIMENTS.items():
        module = importlib.import_module(module_name)  # light: each imports torch and friends only in run()
        sp = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(sp)
        sp.set_defaults(_parser=sp, _module=module_name)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._module).run(args) or 0)
