"""`gr2-sim label`: actions for action-free robot video, from an inverse-dynamics model.

Robot video without actions (phase 2's data) is cheap to record; demonstrations with actions are not. An
inverse-dynamics model (IDM) trained on the demonstrations says which action turned each frame into the next;
run over the action-free video it gives every transition a pseudo-action, and the labelled video can join
the demonstrations in phase 3. This is VPT's recipe (Baker et al. 2022, "Video PreTraining"), the other way
to use video in a policy besides predicting it::

    gr2-sim train --stage idm --data demos.hdf5 --demos 200 --out IDM
    gr2-sim label --idm IDM --data robot_video.hdf5 --out labelled.hdf5
    gr2-sim train --stage action --data demos.hdf5 --demos 200 --extra-data labelled.hdf5 --out RUN

The output is a ``demos`` file (same frames, states and instructions as the video; actions from the IDM) whose
``config`` attribute names the IDM and the source file, so a labelled file is never mistaken for demonstrations.
Each pair (o_t, o_t+1) is labelled with the state at o_t, as the IDM's first pair of a chunk is trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gr2_sim.data import DatasetWriter, Episode, iter_images, load_episodes
from gr2_sim.dataset import frames_to_tensor
from gr2_sim.device import resolve_device
from gr2_sim.errors import UserError


@torch.inference_mode()
def label_episode(idm, normalizer, images: np.ndarray, states: np.ndarray, device, batch_size: int = 256) -> np.ndarray:
    """(T, H, W, 3) uint8 frames and (T, S) states of one episode -> (T - 1, A) float32 unnormalised actions."""
    out = []
    for i in range(0, len(images) - 1, batch_size):
        j = min(i + batch_size, len(images) - 1)
        before = frames_to_tensor(images[i:j], device)
        after = frames_to_tensor(images[i + 1:j + 1], device)
        state = state_next = None
        if idm.config.state_dim:
            state = normalizer.normalize_states(torch.as_tensor(states[i:j], device=device))
        if getattr(idm.config, "next_state", False):
            state_next = normalizer.normalize_states(torch.as_tensor(states[i + 1:j + 1], device=device))
        out.append(normalizer.unnormalize_actions(idm(before, after, state, state_next)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def add_arguments(p) -> None:
    p.add_argument("--idm", required=True, help="run folder of `gr2-sim train --stage idm`")
    p.add_argument("--data", required=True, help="action-free robot video (`gr2-sim collect --no-actions`)")
    p.add_argument("--out", required=True, help="HDF5 file to write: the video with the IDM's actions")
    p.add_argument("--episodes", type=int, default=None, help="label only the first N episodes (default: all)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from policies.inverse_dynamics import load_idm

    if Path(args.out).exists() and not args.overwrite:
        raise UserError(f"{args.out} exists; pass --overwrite to replace it, or choose another --out")
    if Path(args.out).resolve() == Path(args.data).resolve():
        raise UserError("--out must differ from --data: the source video is read while the labels are written")
    idm, normalizer = load_idm(args.idm)
    device = resolve_device(args.device)
    idm = idm.to(device)
    # states and metadata in memory, frames one episode at a time (3000 episodes of video are gigabytes)
    episodes = load_episodes(args.data, max_demos=args.episodes, split="all", load_images=False)
    if episodes.kind != "robot_video":
        raise UserError(f"{args.data} holds {episodes.kind} data; `gr2-sim label` labels robot video "
                        f"(`gr2-sim collect --no-actions`): demonstrations have actions already, synthetic "
                        f"video has no robot")
    if episodes.image_size != idm.config.img_size:
        raise UserError(f"{args.data} has {episodes.image_size}px frames but the IDM reads {idm.config.img_size}px")
    if idm.config.state_dim and episodes.states.shape[1] != idm.config.state_dim:
        raise UserError(f"the IDM reads a {idm.config.state_dim}-D state but {args.data} stores "
                        f"{episodes.states.shape[1]}-D states")
    config = {"labels": "inverse dynamics", "idm": str(args.idm), "source": str(args.data)}
    writer = DatasetWriter(args.out, env_id=episodes.env_id, env_kwargs=episodes.env_kwargs, kind="demos",
                           image_size=episodes.image_size, config=config, overwrite=True)
    with writer:
        frames = iter_images(args.data, episodes.demo_keys)
        for i in tqdm(range(episodes.num_episodes), desc="label", unit="ep", disable=args.no_progress):
            ep = episodes.episode(i)
            ep["images"] = next(frames)
            actions = label_episode(idm, normalizer, ep["images"], ep["states"], device)
            dones = np.zeros(len(actions), np.uint8)
            dones[-1] = 1
            writer.append(Episode(images=ep["images"], states=ep["states"], actions=actions, rewards=ep["rewards"],
                                  dones=dones, instruction=ep["instruction"], seed=ep["seed"], success=ep["success"],
                                  extra_attrs={"pseudo_labels": True}))
    print(f"labelled {episodes.num_episodes} episodes of {args.data} with {args.idm} -> {args.out}")
    return 0
