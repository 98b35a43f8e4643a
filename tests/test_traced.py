"""TracedDiT: the traced policy forward gives the eager model's numbers, and falls back to eager when it can't."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gr2_sim.config import make_config
from gr2_sim.diffusion import Diffusion
from gr2_sim.model import VideoActionDiT
from gr2_sim.traced import TracedDiT


def tiny_model(state_dim: int = 3) -> VideoActionDiT:
    torch.manual_seed(0)
    model = VideoActionDiT(make_config("tiny", state_dim=state_dim, keypoints=2))
    with torch.no_grad():  # the zero-initialised layers get values, so every path contributes
        for p in model.parameters():
            if not p.any():
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("state_dim", [0, 3])
def test_traced_readouts_match_eager(state_dim):
    model = tiny_model(state_dim)
    traced, diffusion = TracedDiT(model), Diffusion(model.config)
    cfg = model.config
    cond = torch.rand(1, 3, cfg.img_size, cfg.img_size) * 2 - 1
    tokens = model.text_encoder.tokenize(["push the red cube"])
    state = torch.randn(1, state_dim) if state_dim else None
    head = [diffusion.head_actions(n, cond, tokens, state, torch.Generator().manual_seed(1)) for n in (model, traced)]
    torch.testing.assert_close(head[0], head[1], atol=1e-5, rtol=0)
    den = [diffusion.ddim_sample(n, cond, tokens, state, steps=3, generator=torch.Generator().manual_seed(2))
           for n in (model, traced)]
    torch.testing.assert_close(den[0][0], den[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(den[0][1], den[1][1], atol=1e-5, rtol=0)
    assert all(trace is not None for _, trace in traced._traces.values())  # both flags were traced, not eager
    other_tokens = model.text_encoder.tokenize(["push the blue cube"])  # new values, same shapes: the trace
    with torch.inference_mode():
        a = traced(cond, torch.zeros(1, cfg.n_future, 3, cfg.img_size, cfg.img_size), torch.tensor([5]), other_tokens,
                   state, need_video=False)["actions"]
        b = model(cond, torch.zeros(1, cfg.n_future, 3, cfg.img_size, cfg.img_size), torch.tensor([5]), other_tokens,
                  state, need_video=False)["actions"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_other_batch_sizes_run_eagerly():
    model = tiny_model()
    traced, cfg = TracedDiT(model), model.config
    S, T = cfg.img_size, cfg.n_future
    args = lambda B: (torch.zeros(B, 3, S, S), torch.zeros(B, T, 3, S, S), torch.zeros(B, dtype=torch.long),  # noqa: E731
                      model.text_encoder.tokenize(["x"] * B), torch.zeros(B, 3))
    traced(*args(1), need_video=False)
    out = traced(*args(4), need_video=False)  # traced for B=1: B=4 goes to the eager model
    assert out["actions"].shape == (4, T, cfg.action_dim)


class Stateful(nn.Module):
    """A forward whose result depends on Python state: a trace freezes the value seen while tracing, so the
    traced and eager results differ."""

    def __init__(self):
        super().__init__()
        self.config = make_config("tiny")
        self.calls = 0

    def forward(self, cond, future, t, tokens, state=None, need_video=True):
        self.calls += 1
        return {"video_pred": future * self.calls, "actions": torch.ones(cond.shape[0], 2, 7) * self.calls}


def test_a_trace_that_disagrees_is_dropped_for_eager():
    model = Stateful()
    net = TracedDiT(model)
    S = 32
    args = (torch.ones(1, 3, S, S), torch.ones(1, 2, 3, S, S), torch.zeros(1, dtype=torch.long),
            torch.zeros(1, 8, dtype=torch.long))
    with pytest.warns(UserWarning, match="disagrees with the eager one"):
        net(*args, need_video=False)
    assert net._traces[(False, False)][1] is None
    before = model.calls
    assert float(net(*args, need_video=False)["actions"][0, 0, 0]) == before + 1  # eager: the model ran again


def test_a_torch_without_tracing_runs_eagerly(monkeypatch):
    model = tiny_model()
    cfg = model.config
    S, T = cfg.img_size, cfg.n_future

    def no_trace(*args, **kwargs):
        raise RuntimeError("tracing is not available")

    monkeypatch.setattr(torch.jit, "trace", no_trace)
    net = TracedDiT(model)
    args = (torch.zeros(1, 3, S, S), torch.zeros(1, T, 3, S, S), torch.zeros(1, dtype=torch.long),
            model.text_encoder.tokenize(["x"]), torch.zeros(1, 3))
    with pytest.warns(UserWarning, match="tracing the model failed"):
        out = net(*args, need_video=False)
    with torch.inference_mode():
        torch.testing.assert_close(out["actions"], model(*args, need_video=False)["actions"])
