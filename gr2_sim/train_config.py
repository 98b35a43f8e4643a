"""What one training run is: :class:`TrainConfig` and the stages, in a module of their own so that the loop
(``gr2_sim/train.py``) and the per-stage objectives (``gr2_sim/objectives.py``) both import it and not each other.
``from gr2_sim.train import TrainConfig`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass

from gr2_sim.errors import UserError

STAGES = ("video", "robot-video", "action", "idm", "bc")


@dataclass
class TrainConfig:
    """One training run. Saved in RUN/config.json."""

    stage: str  # one of STAGES (idm: the inverse-dynamics model, for the `idm` policy readout; bc: image BC)
    data: str  # HDF5 file (gr2-sim collect / synth)
    out: str  # run folder
    preset: str | None = None  # model preset; default 'small', or the --init run's sizes
    init: str | None = None  # run folder whose EMA weights start this run (phase 2 <- 1, 3 <- 2)
    demos: int | None = None  # use only the first N training episodes (the 50/200/1000 settings)
    # more training episodes: every episode of each file (e.g. robot video labelled by `gr2-sim label`); the
    # held-out episodes stay those of `data`
    extra_data: list[str] | None = None
    steps: int = 2000  # optimizer steps
    batch_size: int = 32  # samples per step (per process under torchrun)
    lr: float = 1e-3  # peak AdamW learning rate (Reach, 200 demos, 1500 of 3000 steps: 82% at 1e-3, 70% at 3e-4)
    weight_decay: float = 0.01
    warmup: int = 100  # linear warm-up steps, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    action_weight: float = 1.0  # lambda in L = L_video + lambda * L_action
    video_weight: float = 1.0  # --stage action: weight of L_video; 0 = actions only (GR-1's no-video ablation)
    ema_decay: float = 0.999
    text_dropout: float = 0.1  # probability of training with the null instruction
    shift: int = 4  # random-shift augmentation of training frames, in pixels (0: none)
    # --stage action: the fraction of samples trained with pure-noise future frames (t = K - 1), the input of the
    # one-pass `head` readout. With t uniform, the action loss is mostly met by reading the motion off barely
    # noised future frames, which a policy never has; see docs/results.md
    pure_noise: float = 0.5
    # --stage action: the action loss counts only the samples with pure-noise futures (t = K - 1), so the head
    # learns from the inputs it reads at inference (the `head` readout) and cannot meet its loss by reading the
    # motion off barely noised future frames; the video loss still sees every noise level. False: every sample
    action_on_pure_noise: bool = True
    # --stage action with a model whose action head reads the keypoints only (action_from_dit=false, the small
    # and base presets): the video loss (the transformer) on the first video_batch samples of each batch, the
    # action loss (the keypoint encoder and the head, about a twentieth of the cost per sample) on all of them.
    # 0: the whole batch; None: a quarter of it for such models (16 of 64, as measured in docs/policies.md), the
    # whole batch for the others (see video_batch_for)
    video_batch: int | None = None
    # the video loss weighs the pixels that change between the conditioning and the future frame (the arm, the
    # moved cube: a few percent of a frame) 1 + change_weight times the static ones, so that "copy the last
    # frame", nearly right on most pixels, is not where training settles. 0: plain mean squared error
    change_weight: float = 4.0
    # privileged training-time supervision (off by default; report its results apart from camera-only ones):
    # the last K state values of the data (e.g. the 6 object and goal positions of data collected with
    # --env-kwargs '{"object_state": true}') are not inputs but the targets of an auxiliary head on the
    # keypoints. The policy reads the remaining state and the camera; it is evaluated without object_state
    aux_state: int = 0
    aux_weight: float = 1.0  # weight of the auxiliary loss
    # weight of the keypoint decoder's loss (models built with --set keypoint_decoder=SIDE; no labels needed)
    recon_weight: float = 1.0
    use_state: bool = True  # condition on proprioception when the data has it
    compile: bool = False  # torch.compile the training forward pass (bench: 4-8% faster on 2 CPU cores; compiles first)
    frame_stride: int = 1  # frames between consecutive predicted future frames
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads; 0: OMP_NUM_THREADS if set, else one per core not busy at the start
    bf16: bool = True  # bf16 autocast of the forward pass on CUDA (TF32 matmuls either way); never on CPU
    log_every: int = 25
    eval_every: int = 250  # validation (held-out episodes) every N steps
    ckpt_every: int = 250  # checkpoint every N steps (at most this many steps are lost on a kill)
    keep_every: int = 0  # also keep the weights every N steps as RUN/checkpoints/step_<N>/ (0: never)
    keep_best: bool = True  # keep the weights of the lowest held-out error in RUN/best/
    val_windows: int = 256
    resume: bool = False
    progress: bool = True
    overrides: dict | None = None  # ModelConfig field overrides, e.g. {"n_layers": 2}

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise UserError(f"--stage {self.stage!r} is not one of {', '.join(STAGES)}")
        if not 0 <= self.shift < 32:
            raise UserError(f"--shift must be between 0 and 31 pixels (0 turns augmentation off), got {self.shift}")
        if self.aux_state < 0 or (self.aux_state and self.stage != "action"):
            raise UserError(f"--aux-state {self.aux_state}: auxiliary targets are for --stage action, K >= 1 "
                            f"(0: off); got stage {self.stage!r}")
        if not self.recon_weight >= 0:
            raise UserError(f"--recon-weight must be >= 0 (the keypoint decoder's loss weight), got {self.recon_weight}")
        if not self.change_weight >= 0:
            raise UserError(f"--change-weight must be >= 0 (0: plain MSE), got {self.change_weight}")
        if not 0 <= self.text_dropout <= 1:
            raise UserError(f"--text-dropout must be a probability in [0, 1], got {self.text_dropout}")
        if not 0 <= self.pure_noise <= 1:
            raise UserError(f"--pure-noise must be a fraction in [0, 1], got {self.pure_noise}")
        if self.video_batch is not None and (self.video_batch < 0 or (self.video_batch and self.stage != "action")):
            raise UserError(f"--video-batch {self.video_batch}: the samples of each batch that carry the video loss, "
                            f"for --stage action (0: all); got stage {self.stage!r}")
        if self.keep_every < 0:
            raise UserError(f"--keep-every must be >= 0 (0: keep no intermediate weights), got {self.keep_every}")
        if self.threads < 0:
            raise UserError(f"--threads must be >= 1, or 0 / auto for one thread per free core; got {self.threads}")
        for name in ("steps", "batch_size", "log_every", "eval_every", "ckpt_every", "frame_stride"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema-decay must be in [0, 1) (0: the EMA is the raw weights), got {self.ema_decay}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be >= 0 steps, got {self.warmup}")
        if not self.video_weight >= 0:
            raise UserError(f"--video-weight must be >= 0 (0: no video loss), got {self.video_weight}")
        if self.video_weight == 0 and self.stage != "action":
            raise UserError(f"--video-weight 0 leaves --stage {self.stage} nothing to learn; it is for --stage action "
                            f"(the DiT trained on actions only)")
        if self.demos is not None and self.demos < 1:
            raise UserError(f"--demos must be >= 1, got {self.demos}")


def video_batch_for(video_batch: int | None, batch_size: int, keypoints_only: bool) -> int:
    """The samples of each batch that carry the video loss, 0 meaning all of them: ``video_batch`` where it is
    given, else a quarter of the batch for a model whose action head reads the keypoints only (the video loss
    costs about twenty times the action loss per sample there) and the whole batch for the others."""
    if video_batch is not None:
        return video_batch
    return max(1, batch_size // 4) if keypoints_only else 0
