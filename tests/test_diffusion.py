"""Noise schedules, q_sample / training targets, and the DDIM sampler's determinism and contract."""

from __future__ import annotations

import pytest
import torch

from gr2_sim.config import make_config
from gr2_sim.diffusion import Diffusion, cosine_betas, linear_betas
from gr2_sim.errors import UserError
from gr2_sim.model import VideoActionDiT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = make_config("tiny", img_size=32, patch_size=8, state_dim=3, action_dim=4)
    model = VideoActionDiT(cfg)
    with torch.no_grad():  # leave the zero init so sampling depends on the weights, not only on the noise
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    cond = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    tokens = model.text_encoder.tokenize(["open the drawer", ""])
    state = torch.randn(2, 3, generator=g)
    return model, Diffusion(cfg), cond, tokens, state


@pytest.mark.parametrize("betas", [cosine_betas(100), linear_betas(100), cosine_betas(1000)])
def test_schedules_go_from_clean_to_pure_noise(betas):
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert (betas > 0).all() and (betas < 1).all()
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()
    assert alpha_bar[0] > 0.99 and alpha_bar[-1] < 1e-3


@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
def test_targets_invert_to_x0_and_eps(prediction):
    diffusion = Diffusion(make_config("tiny", prediction=prediction))
    x0 = torch.rand(4, 2, 3, 8, 8) * 2 - 1
    noise, t = torch.randn_like(x0), torch.tensor([0, 10, 50, 90])
    x_t = diffusion.q_sample(x0, t, noise)
    ab = diffusion.alpha_bar[t].view(-1, 1, 1, 1, 1)
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-6)
    target = diffusion.training_targets(x0, t, noise)
    assert torch.equal(target, diffusion.target(x0, noise, t))
    x0_hat, eps_hat = diffusion.predict_x0_eps(x_t, t, target)  # a perfect model recovers both
    assert torch.allclose(x0_hat, x0, atol=1e-4)
    assert torch.allclose(eps_hat[1:], noise[1:], atol=1e-3)  # at t=0 eps is ill-conditioned (sqrt(1-ab) ~ 0.01)


def test_ddim_timesteps():
    diffusion = Diffusion(make_config("tiny"))
    assert diffusion.ddim_timesteps(10) == [99, 88, 77, 66, 55, 44, 33, 22, 11, 0]
    assert diffusion.ddim_timesteps(1) == [99]
    assert diffusion.ddim_timesteps(100) == list(range(99, -1, -1))
    with pytest.raises(UserError, match=r"steps=0 must be in \[1, 100\]"):
        diffusion.ddim_timesteps(0)
    with pytest.raises(UserError, match="steps=101"):
        diffusion.ddim_timesteps(101)


def test_ddim_is_deterministic_per_seed_and_differs_across_seeds(setup):
    model, diffusion, cond, tokens, state = setup
    run = lambda seed, eta=0.0: diffusion.ddim_sample(  # noqa: E731
        model, cond, tokens, state, steps=4, eta=eta, generator=torch.Generator().manual_seed(seed)
    )
    frames, actions = run(0)
    assert frames.shape == (2, 2, 3, 32, 32) and actions.shape == (2, 2, 4)
    assert frames.min() >= -1 and frames.max() <= 1
    again, again_actions = run(0)
    assert torch.equal(frames, again) and torch.equal(actions, again_actions)
    other, _ = run(1)
    assert not torch.allclose(frames, other)
    stochastic, _ = run(0, eta=1.0)
    assert torch.equal(stochastic, run(0, eta=1.0)[0]) and not torch.allclose(stochastic, frames)
    assert diffusion.ddim_sample(model, cond, tokens, state, steps=2, return_actions=False)[1] is None


def test_ddim_does_not_mutate_inputs_or_leave_grads(setup):
    model, diffusion, cond, tokens, state = setup
    before = (cond.clone(), tokens.clone(), state.clone())
    frames, _ = diffusion.ddim_sample(model, cond, tokens, state, steps=2)
    assert not frames.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, (cond, tokens, state), strict=True))


def test_head_actions_is_one_forward_pass(setup):
    model, diffusion, cond, tokens, state = setup
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        a = diffusion.head_actions(model, cond, tokens, state, generator=torch.Generator().manual_seed(3))
        b = diffusion.head_actions(model, cond, tokens, state, generator=torch.Generator().manual_seed(3))
    finally:
        handle.remove()
    assert len(calls) == 2 and a.shape == (2, 2, 4) and torch.equal(a, b)


@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
def test_ddim_with_an_oracle_denoiser_recovers_the_clean_frames(prediction):
    cfg = make_config("tiny", img_size=16, patch_size=8, prediction=prediction)
    diffusion = Diffusion(cfg)
    x0 = torch.rand(2, cfg.n_future, 3, 16, 16) * 1.8 - 0.9

    class Oracle(torch.nn.Module):
        """Predicts the exact x0 (or eps, or v) that maps x_t back to the known x0."""

        config = cfg

        def forward(self, cond_frame, x_t, t, text_tokens, state):
            ab = diffusion.alpha_bar[t].view(-1, 1, 1, 1, 1)
            eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
            out = {"x0": x0, "eps": eps, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[prediction]
            return {"video_pred": out, "actions": torch.zeros(2, cfg.n_future, cfg.action_dim)}

    for steps, eta in [(5, 0.0), (20, 1.0), (1, 0.0)]:
        frames, _ = diffusion.ddim_sample(Oracle(), torch.zeros(2, 3, 16, 16), None, steps=steps, eta=eta)
        assert torch.allclose(frames, x0, atol=1e-3), (steps, eta)  # eps at t=K-1 divides by ~5e-4


def test_ddim_encodes_the_conditioning_frame_once_with_the_same_result(monkeypatch):
    from gr2_sim.config import make_config
    from gr2_sim.model import VideoActionDiT

    torch.manual_seed(0)
    cfg = make_config("tiny", state_dim=2)
    model = VideoActionDiT(cfg).eval()
    with torch.no_grad():  # a model whose video head is not zero, so the steps differ
        model.final_layer.linear.weight.normal_(std=0.02)
    diffusion = Diffusion(cfg)
    cond, tokens, state = torch.randn(2, 3, 64, 64), model.text_encoder.tokenize(["a", "b"]), torch.randn(2, 2)
    calls = []
    encode = model.keypoints.features  # the conv trunk: the keypoints' and the conditioning tokens' encoder
    monkeypatch.setattr(model.keypoints, "features", lambda *a: calls.append(1) or encode(*a))
    cached = diffusion.ddim_sample(model, cond, tokens, state, steps=3, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 1  # once for the three steps
    monkeypatch.setattr(VideoActionDiT, "supports_cond_cache", False)
    plain = diffusion.ddim_sample(model, cond, tokens, state, steps=3, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 4
    torch.testing.assert_close(cached[0], plain[0])
    torch.testing.assert_close(cached[1], plain[1])
