"""VideoActionDiT: shapes, adaLN-Zero identity at init, attention maps, overfitting, config validation,
FLOP accounting and the reference model."""

from __future__ import annotations

import pytest
import torch

from gr2_sim.config import PRESETS, ConfigError, ModelConfig, make_config
from gr2_sim.errors import UserError
from gr2_sim.model import Attention, VideoActionDiT, patchify, unpatchify
from gr2_sim.reference_model import ReferenceDiT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_inputs(cfg: ModelConfig, B: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    S, T = cfg.img_size, cfg.n_future
    return dict(
        cond_frame=torch.rand(B, 3, S, S, generator=g) * 2 - 1,
        noisy_future=torch.randn(B, T, 3, S, S, generator=g),
        t=torch.randint(0, cfg.diffusion_steps, (B,), generator=g),
        text_tokens=torch.randint(0, cfg.vocab_size, (B, cfg.max_text_len), generator=g),
        state=torch.randn(B, cfg.state_dim, generator=g) if cfg.state_dim else None,
    )


def randomize_zero_init(model: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised (adaLN-Zero) weights random values so the model is not an identity map."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize(
    "overrides",
    [dict(action_dim=7), dict(action_dim=4, state_dim=5), dict(action_dim=7, state_dim=8, img_size=32, patch_size=8),
     dict(n_future=3, pos_embed="learned", text_layers=0, prediction="v"),
     dict(cond_stem="conv", action_pool="mean"), dict(cond_stem="conv", img_size=32, patch_size=8, state_dim=3),
     dict(keypoints=4), dict(keypoints=3, patch_size=4, img_size=16, action_pool="mean"),
     dict(cond_stem="trunk"), dict(cond_stem="trunk", patch_size=8, state_dim=3),
     dict(cond_stem="trunk", keypoints=3, patch_size=4, img_size=16), dict(state_dim=2, state_in_blocks=False),
     dict(video_head="conv"), dict(video_head="conv", patch_size=4, img_size=16, video_head_width=4),
     dict(video_head="conv", cond_stem="conv", state_dim=3)],
)  # fmt: skip
def test_output_shapes(overrides):
    cfg = make_config("tiny", **overrides)
    model = VideoActionDiT(cfg)
    B, S, T = 3, cfg.img_size, cfg.n_future
    out = model(**make_inputs(cfg, B))
    assert out.video_pred.shape == (B, T, 3, S, S)
    assert out.actions.shape == (B, T, cfg.action_dim)
    assert out.loss is None and out.video_loss is None and out.action_loss is None and out.attention is None
    assert out["video_pred"] is out.video_pred  # dict and attribute access agree


def test_losses_follow_the_targets_given():
    cfg = make_config("tiny", img_size=32, patch_size=8)
    model = VideoActionDiT(cfg)
    randomize_zero_init(model)
    inputs = make_inputs(cfg)
    noise, actions = torch.randn_like(inputs["noisy_future"]), torch.randn(2, cfg.n_future, cfg.action_dim)
    both = model(**inputs, target_noise=noise, target_actions=actions, action_weight=0.5)
    assert torch.allclose(both.loss, both.video_loss + 0.5 * both.action_loss)
    video_only = model(**inputs, target_noise=noise)
    assert video_only.action_loss is None and torch.equal(video_only.loss, video_only.video_loss)
    action_only = model(**inputs, target_actions=actions)
    assert action_only.video_loss is None and torch.equal(action_only.loss, action_only.action_loss)


def test_blocks_are_identity_and_video_head_is_zero_at_init():
    cfg = make_config("tiny", gate_init=0.0, residual=False)  # adaLN-Zero
    model = VideoActionDiT(cfg)
    x, c = torch.randn(2, cfg.n_tokens, cfg.d_model), torch.randn(2, cfg.d_model)
    for block in model.blocks:
        assert torch.equal(block(x, c), x)
    out = model(**make_inputs(cfg))
    assert torch.equal(out.video_pred, torch.zeros_like(out.video_pred))
    assert out.actions.abs().sum() > 0  # the action head is not zero-initialised


def test_residual_video_head_starts_as_copy_of_the_conditioning_frame():
    cfg = make_config("tiny")
    assert cfg.residual and cfg.future_input == "stack"
    inputs = make_inputs(cfg)
    out = VideoActionDiT(cfg)(**inputs)
    copies = inputs["cond_frame"].unsqueeze(1).expand_as(out.video_pred)
    assert torch.equal(out.video_pred, copies)  # "copy the last frame" at init, whatever the noise


def test_stacked_future_tokens_see_the_conditioning_pixels_at_their_place():
    """With future_input='stack' the future patch embedding reads the conditioning frame's pixels: changing one
    conditioning patch changes the future token of that patch at the embedding, before any attention."""
    cfg = make_config("tiny", img_size=32, patch_size=16)
    model = VideoActionDiT(cfg)
    assert model.patch_embed.in_features == 6 * 16 * 16
    inputs = make_inputs(cfg, B=1)
    cond = inputs["cond_frame"].clone()
    cond[..., :16, :16] += 0.5  # the top-left patch only
    stacked = lambda c: torch.cat([inputs["noisy_future"], c.unsqueeze(1).expand_as(inputs["noisy_future"])], 2)  # noqa: E731
    a = model.patch_embed(patchify(stacked(inputs["cond_frame"]), 16)).reshape(cfg.n_future, 4, -1)
    b = model.patch_embed(patchify(stacked(cond), 16)).reshape(cfg.n_future, 4, -1)
    changed = (a - b).abs().amax(-1) > 0  # (T, 4 patches)
    assert changed[:, 0].all() and not changed[:, 1:].any()
    lesson = VideoActionDiT(make_config("lesson", d_model=32, n_heads=2, n_layers=1, img_size=32))
    assert lesson.patch_embed.in_features == 3 * 8 * 8 and lesson.cond_embed is None


def test_patchify_round_trip():
    frames = torch.randn(2, 3, 3, 32, 32)
    assert torch.equal(unpatchify(patchify(frames, 8), 3, 32, 8), frames)


def test_attention_maps_only_when_requested(monkeypatch):
    cfg = make_config("tiny", img_size=32, patch_size=8)
    model = VideoActionDiT(cfg)
    randomize_zero_init(model)
    inputs = make_inputs(cfg)
    with_maps = model(**inputs, return_attention=True)
    assert len(with_maps.attention) == cfg.n_layers
    for attn in with_maps.attention:
        assert attn.shape == (2, cfg.n_heads, cfg.n_tokens, cfg.n_tokens)
        assert torch.allclose(attn.sum(-1), torch.ones(()), atol=1e-5) and (attn >= 0).all()

    def explicit_forbidden(*args):
        raise AssertionError("attention map computed although return_attention=False")

    monkeypatch.setattr(Attention, "explicit", staticmethod(explicit_forbidden))
    without = model(**inputs)
    assert without.attention is None
    # the explicit path and the fused SDPA path compute the same function
    assert torch.allclose(without.video_pred, with_maps.video_pred, atol=1e-5)
    assert torch.allclose(without.actions, with_maps.actions, atol=1e-5)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    cfg = make_config("tiny", img_size=16, patch_size=8, d_model=64, state_dim=3)
    model = VideoActionDiT(cfg)
    inputs = make_inputs(cfg, B=2, seed=1)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(inputs["noisy_future"].shape, generator=g)
    actions = torch.rand(2, cfg.n_future, cfg.action_dim, generator=g) * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(120):
        out = model(**inputs, target_noise=noise, target_actions=actions)
        first = first or (out.video_loss.item(), out.action_loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    last = (out.video_loss.item(), out.action_loss.item())
    assert last[0] < first[0] / 10, (first, last)
    assert last[1] < first[1] / 10, (first, last)


def test_input_shape_errors_quote_the_shapes():
    cfg = make_config("tiny", state_dim=4)
    model = VideoActionDiT(cfg)
    inputs = make_inputs(cfg)
    with pytest.raises(UserError, match=r"state must be \(2, 4\)"):
        model(**{**inputs, "state": None})
    with pytest.raises(UserError, match=r"noisy_future shape \(2, 5, 3, 64, 64\)"):
        model(**{**inputs, "noisy_future": torch.zeros(2, 5, 3, 64, 64)})


def test_config_validation_quotes_bad_values():
    with pytest.raises(ConfigError, match=r"patch_size=12 does not divide img_size=64; use one of \[1, 2, 4, 8, 16"):
        ModelConfig(patch_size=12)
    with pytest.raises(ValueError, match="d_model=100 is not divisible by n_heads=8"):
        ModelConfig(d_model=100, n_heads=8)
    with pytest.raises(ValueError, match="schedule='quadratic' is not one of"):
        ModelConfig(schedule="quadratic")
    with pytest.raises(UserError, match=r"unknown preset 'huge'; choose one of \['base', 'lesson', 'small', 'tiny'\]"):
        make_config("huge")
    with pytest.raises(ConfigError, match="unknown ModelConfig field"):
        make_config("tiny", n_layer=3)


def test_config_json_round_trip():
    import json

    cfg = make_config("small", action_dim=4, state_dim=9)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert set(PRESETS) == {"tiny", "small", "base", "lesson"}


def test_flops_and_params():
    flops = {name: VideoActionDiT(make_config(name)).estimate_flops() for name in ("tiny", "small", "base")}
    for f in flops.values():
        assert 0 < f["attention"] < f["forward"] and f["train_step"] == 3 * f["forward"]
    assert flops["tiny"]["forward"] < flops["small"]["forward"] < flops["base"]["forward"]
    small = VideoActionDiT(make_config("small"))
    assert 0 < small.num_params() < VideoActionDiT(make_config("base")).num_params()
    # the dominant term by hand: 4 blocks x 80 tokens x (qkv + proj + mlp at ratio 2) x 2 FLOPs/MAC
    assert small.estimate_flops()["forward"] > 4 * 80 * (4 + 4) * 128 * 128 * 2


@pytest.mark.parametrize("state_dim", [0, 6])
def test_reference_model_has_the_same_contract(state_dim):
    cfg = make_config("tiny", state_dim=state_dim, action_dim=4)
    ref = ReferenceDiT(cfg)
    inputs = make_inputs(cfg)
    noise, actions = torch.randn_like(inputs["noisy_future"]), torch.randn(2, cfg.n_future, 4)
    out = ref(**inputs, target_noise=noise, target_actions=actions, return_attention=True)
    ours = VideoActionDiT(cfg)(**inputs)
    assert out.video_pred.shape == ours.video_pred.shape and out.actions.shape == ours.actions.shape
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.attention[0].shape == (2, cfg.n_heads, cfg.n_tokens, cfg.n_tokens)


def test_attention_pool_reads_the_conditioning_frame_directly():
    """At init the blocks are identities, so the only path from the conditioning frame to the actions is the
    pool: the attention pool reads the conditioning tokens (with their positions), mean pooling of the future
    tokens cannot see them. Mirroring the frame moves the same patches to other places."""
    torch.manual_seed(0)
    cfg = make_config("tiny", img_size=32, patch_size=16, n_layers=1, gate_init=0.0,  # blocks are identities
                      keypoints=0, future_input="noisy")  # the pool is then the only path to the actions
    attention = VideoActionDiT(cfg)
    mean = VideoActionDiT(make_config("tiny", img_size=32, patch_size=16, n_layers=1, gate_init=0.0,
                                      action_pool="mean", keypoints=0, future_input="noisy"))
    inputs = make_inputs(cfg, B=1)
    swapped = dict(inputs, cond_frame=inputs["cond_frame"].flip(-1))  # the same patches, mirrored left-right
    for model, changes in ((attention, True), (mean, False)):
        a, b = model(**inputs).actions, model(**swapped).actions
        assert (not torch.allclose(a, b, atol=1e-6)) == changes


def test_attention_pool_weights_cover_the_conditioning_and_own_frame():
    cfg = make_config("tiny")
    model = VideoActionDiT(cfg)
    B, n, D = 2, cfg.patches_per_frame, cfg.d_model
    future, cond, c = torch.randn(B, cfg.n_future, n, D), torch.randn(B, n, D), torch.randn(B, D)
    randomize_zero_init(model)
    pooled, weights = model.action_pool(future, cond, c, return_weights=True)
    assert pooled.shape == (B, cfg.n_future, D) and weights.shape == (B, cfg.n_future, cfg.n_heads, 2 * n)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, cfg.n_future, cfg.n_heads))
    torch.testing.assert_close(pooled, model.action_pool(future, cond, c))  # explicit and fused paths agree
    other = model.action_pool(future, cond, torch.randn(B, D), return_weights=True)[1]
    assert not torch.allclose(other, weights)  # the instruction (in c) changes where the readout looks


def test_conv_stem_costs_are_counted_and_it_needs_a_power_of_two_patch():
    linear = VideoActionDiT(make_config("small", cond_stem="linear")).estimate_flops()["forward"]
    conv = VideoActionDiT(make_config("small", cond_stem="conv")).estimate_flops()["forward"]
    assert linear < conv < 1.5 * linear
    with pytest.raises(ConfigError, match="power-of-two patch_size"):
        make_config("tiny", img_size=48, patch_size=12, cond_stem="conv")
    with pytest.raises(ConfigError, match="action_pool='max' is not one of"):
        make_config("tiny", action_pool="max")


def test_gate_init_sets_where_blocks_start():
    cfg = make_config("tiny", gate_init=1.0)
    model = VideoActionDiT(cfg)
    x, c = torch.randn(2, cfg.n_tokens, cfg.d_model), torch.randn(2, cfg.d_model)
    block = model.blocks[0]
    gates = block.adaLN_modulation(c).chunk(6, dim=1)
    assert torch.equal(gates[2], torch.ones_like(gates[2])) and torch.equal(gates[5], torch.ones_like(gates[5]))
    assert not torch.allclose(block(x, c), x)  # a plain pre-norm residual block, not the identity


def test_actions_only_readout_skips_the_video_head_and_agrees():
    cfg = make_config("tiny")
    model = VideoActionDiT(cfg)
    randomize_zero_init(model)
    inputs = make_inputs(cfg)
    full, fast = model(**inputs), model(**inputs, need_video=False)
    assert fast.video_pred is None and full.video_pred is not None
    torch.testing.assert_close(fast.actions, full.actions)


def test_spatial_softmax_finds_a_bright_pixel():
    from gr2_sim.model import SpatialSoftmax

    pool = SpatialSoftmax(channels=2, keypoints=2)
    with torch.no_grad():  # map k reads channel k, sharply
        pool.to_maps.weight.copy_(torch.eye(2)[:, :, None, None] * 50.0)
        pool.to_maps.bias.zero_()
    features = torch.zeros(1, 2, 5, 9)
    features[0, 0, 4, 0] = 1.0  # bottom-left
    features[0, 1, 2, 6] = 1.0  # middle row, x = -1 + 6 * 2/8 = 0.5
    xy = pool(features).reshape(2, 2)
    torch.testing.assert_close(xy, torch.tensor([[-1.0, 1.0], [0.5, 0.0]]), atol=1e-3, rtol=0)


def test_keypoint_encoder_reads_the_frame_at_stride_4_and_learns():
    cfg = make_config("tiny", keypoints=4, state_dim=2)
    model = VideoActionDiT(cfg)
    inputs = make_inputs(cfg, 4)
    frame, lang = inputs["cond_frame"], model.text_encoder(inputs["text_tokens"])
    x = frame
    for conv in model.keypoints.convs:
        x = conv(x)
    assert x.shape[-2:] == (cfg.img_size // 4, cfg.img_size // 4)  # a 16x16 map for a 64x64 frame
    xy = model.keypoints(frame, lang)
    assert xy.shape == (4, 8) and xy.abs().max() <= 1
    assert model.action_head[0].in_features == cfg.d_model + 2 * 4 + 2  # pooled states | keypoints | state
    moved = dict(inputs, cond_frame=inputs["cond_frame"].roll(8, dims=-1))  # the scene shifted right
    assert not torch.allclose(model.keypoints(moved["cond_frame"], lang), xy)
    target = torch.randn(4, cfg.n_future, cfg.action_dim)
    model(**inputs, target_actions=target).loss.backward()
    assert model.keypoints.softmax.to_maps.weight.grad.abs().sum() > 0  # gradient reaches the keypoint maps
    assert model.keypoints.convs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="multiple of 4"):
        make_config("tiny", keypoints=4, img_size=30, patch_size=15, cond_stem="linear")


def test_trunk_stem_lets_the_video_loss_train_the_keypoint_encoder():
    """cond_stem="trunk": the conditioning tokens are read off the keypoint encoder's map, so a video loss alone
    sends gradient into that encoder (with the separate conv stem it cannot), and the tokens keep the patch grid."""
    grads = {}
    for stem in ("conv", "trunk"):
        cfg = make_config("tiny", cond_stem=stem)
        model = VideoActionDiT(cfg)
        randomize_zero_init(model)
        inputs = make_inputs(cfg, 2)
        out = model(**inputs, target_noise=torch.randn_like(inputs["noisy_future"]))
        out.video_loss.backward()
        grads[stem] = model.keypoints.convs[0].weight.grad
    assert grads["conv"] is None or not grads["conv"].any()
    assert grads["trunk"].abs().sum() > 0
    cfg = make_config("tiny", cond_stem="trunk", patch_size=8)
    model = VideoActionDiT(cfg)
    lang = model.text_encoder(make_inputs(cfg)["text_tokens"])
    tokens = model.trunk_stem(model.keypoints.features(make_inputs(cfg)["cond_frame"], lang))
    assert tokens.shape == (2, cfg.patches_per_frame, cfg.d_model)
    trunk = VideoActionDiT(make_config("small", cond_stem="trunk")).estimate_flops()["forward"]
    conv = VideoActionDiT(make_config("small", cond_stem="conv")).estimate_flops()["forward"]
    assert trunk < conv  # one trunk instead of two encoders
    for bad, match in ((dict(keypoints=0), "needs keypoints > 0"), (dict(patch_size=2, img_size=16), ">= 4")):
        with pytest.raises(ConfigError, match=match):
            make_config("tiny", cond_stem="trunk", **bad)


@pytest.mark.parametrize("keypoints", [0, 4])
def test_state_outside_the_blocks_reaches_the_action_head_only(keypoints):
    cfg = make_config("tiny", state_dim=3, state_in_blocks=False, keypoints=keypoints)
    model = VideoActionDiT(cfg)
    randomize_zero_init(model)
    assert model.state_embedder is None
    assert model.action_head[0].in_features == cfg.d_model + 2 * keypoints + 3
    inputs = make_inputs(cfg)
    out, moved = model(**inputs), model(**dict(inputs, state=inputs["state"] + 1))
    torch.testing.assert_close(moved.video_pred, out.video_pred)  # the video half does not read the state
    assert not torch.allclose(moved.actions, out.actions)
    assert ModelConfig.from_dict({k: v for k, v in make_config("tiny").to_dict().items()
                                  if k != "state_in_blocks"}).state_in_blocks  # saved before the field: True


def test_action_head_without_the_dit_states_reads_keypoints_and_state():
    cfg = make_config("tiny", state_dim=3, action_from_dit=False, cond_stem="trunk")
    model = VideoActionDiT(cfg)
    randomize_zero_init(model)
    assert model.action_head[0].in_features == 2 * cfg.keypoints + 3
    inputs = make_inputs(cfg)
    out = model(**inputs)
    other_noise = model(**dict(inputs, noisy_future=torch.randn_like(inputs["noisy_future"]), t=inputs["t"] * 0))
    torch.testing.assert_close(other_noise.actions, out.actions)  # nothing of the DiT's token states
    assert not torch.allclose(other_noise.video_pred, out.video_pred)
    with pytest.raises(ConfigError, match="needs keypoints > 0"):
        make_config("tiny", action_from_dit=False, keypoints=0)


def test_keypoint_only_head_reads_the_whole_chunk_without_the_blocks():
    from gr2_sim.diffusion import Diffusion

    cfg = make_config("tiny", state_dim=3, action_from_dit=False, cond_stem="trunk")
    model = VideoActionDiT(cfg).eval()
    randomize_zero_init(model)
    assert model.reads_keypoints_only and model.action_head[-1].out_features == cfg.n_future * cfg.action_dim
    inputs = make_inputs(cfg)
    actions = model(**inputs).actions
    assert actions.shape == (2, cfg.n_future, cfg.action_dim)
    assert not torch.allclose(actions[:, 0], actions[:, 1])  # one action per step of the chunk
    direct = model.keypoint_actions(inputs["cond_frame"], inputs["text_tokens"], inputs["state"])
    torch.testing.assert_close(direct.actions, actions)
    assert direct.aux_loss is None and direct.recon_loss is None
    blocks_ran = []
    for block in model.blocks:
        block.register_forward_hook(lambda *a: blocks_ran.append(1))
    head = Diffusion(cfg).head_actions(model, inputs["cond_frame"], inputs["text_tokens"], inputs["state"])
    torch.testing.assert_close(head, actions)
    assert not blocks_ran  # the head readout skips the transformer
    with pytest.raises(UserError, match="state must be"):
        model.keypoint_actions(inputs["cond_frame"], inputs["text_tokens"], None)
    lesson_readout = VideoActionDiT(make_config("tiny", state_dim=3))
    with pytest.raises(UserError, match="reads the DiT's token states"):
        lesson_readout.keypoint_actions(inputs["cond_frame"], inputs["text_tokens"], inputs["state"])
    # configs saved before chunk_head keep the per-frame head: one action repeated over the chunk
    old = ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "chunk_head"})
    assert not old.chunk_head
    old_model = VideoActionDiT(old)
    randomize_zero_init(old_model)
    assert old_model.action_head[-1].out_features == cfg.action_dim
    repeated = old_model(**inputs).actions
    torch.testing.assert_close(repeated[:, 0], repeated[:, 1])


def test_old_design_checkpoint_config_is_refused_with_what_to_do():
    old = make_config("tiny").to_dict()
    for key in ("future_input", "residual", "keypoint_channels"):
        old.pop(key)
    with pytest.raises(ConfigError, match="before the visual pathway was redesigned.*Retrain"):
        ModelConfig.from_dict(old)


def test_small_and_base_presets_read_the_actions_off_the_trunk_the_video_head_trains():
    for name in ("small", "base"):
        cfg = make_config(name)
        model = VideoActionDiT(cfg)
        assert model.reads_keypoints_only and cfg.video_head == "conv" and not cfg.video_head_detach
        assert (cfg.cond_stem, cfg.keypoint_layout, cfg.action_layers, cfg.action_hidden) == ("trunk", "bc", 3, 512)
    assert not VideoActionDiT(make_config("tiny")).reads_keypoints_only  # tests keep the DiT-state readout too
    # without keypoints, what reads them falls back to the DiT's own pathway instead of failing
    cfg = make_config("small", keypoints=0)
    assert (cfg.cond_stem, cfg.action_from_dit, cfg.video_head) == ("conv", True, "linear")
    with pytest.raises(UserError, match="action_from_dit=false leaves the action head only the keypoints"):
        make_config("small", keypoints=0, action_from_dit=False)


def test_lesson_preset_is_the_lessons_model():
    cfg = make_config("lesson")
    assert (cfg.patch_size, cfg.d_model, cfg.n_layers, cfg.n_heads) == (8, 256, 6, 8)
    assert (cfg.cond_stem, cfg.future_input, cfg.action_pool, cfg.keypoints) == ("linear", "noisy", "mean", 0)
    assert (cfg.prediction, cfg.residual, cfg.gate_init) == ("eps", False, 0.0)
    model = VideoActionDiT(cfg)
    assert model.cond_stem is None and model.keypoints is None and model.action_pool is None
    for block in model.blocks:  # adaLN-Zero: every gate starts at zero
        assert block.adaLN_modulation[-1].bias.abs().sum() == 0


def test_change_weighted_video_loss():
    cfg = make_config("tiny")
    model = VideoActionDiT(cfg)
    inputs = make_inputs(cfg)
    target = torch.randn(2, cfg.n_future, 3, cfg.img_size, cfg.img_size)
    plain = model(**inputs, target_noise=target).video_loss
    ones = model(**inputs, target_noise=target, pixel_weight=torch.ones(2, cfg.n_future, 1, 64, 64)).video_loss
    torch.testing.assert_close(plain, ones)
    weight = torch.zeros(2, cfg.n_future, 1, 64, 64)
    weight[..., :8, :8] = 1.0  # only one corner counts
    pred = model(**inputs, target_noise=target).video_pred
    corner = (pred - target)[..., :8, :8].pow(2).mean()
    torch.testing.assert_close(model(**inputs, target_noise=target, pixel_weight=weight).video_loss, corner)


def test_action_mask_counts_only_the_chosen_samples():
    cfg = make_config("tiny")
    model = VideoActionDiT(cfg)
    inputs = make_inputs(cfg)
    target = torch.randn(2, cfg.n_future, cfg.action_dim)
    out = model(**inputs, target_actions=target, action_mask=torch.tensor([True, False]))
    first = (out.actions[0] - target[0]).pow(2).mean()
    torch.testing.assert_close(out.action_loss, first)
    none = model(**inputs, target_actions=target, action_mask=torch.tensor([False, False]))
    assert none.action_loss == 0


def test_conv_video_head_starts_as_copy_and_moves_pixels_locally():
    """video_head="conv": the prediction starts as "copy" (zero last convolution), a video loss alone trains the
    keypoint encoder through the skip with video_head_detach=False (not by default), and a change in one 4x4 block of the
    noisy future moves the prediction near that block (two 3x3 convolutions on the stride-4 grid: up to 2 cells,
    8 pixels, away) and only through the GroupNorm statistics elsewhere, when the transformer is out of the way."""
    cfg = make_config("tiny", video_head="conv", cond_stem="conv", img_size=32, patch_size=8,
                      video_head_detach=False)
    model = VideoActionDiT(cfg)
    inputs = make_inputs(cfg)
    out = model(**inputs)
    assert torch.equal(out.video_pred, inputs["cond_frame"].unsqueeze(1).expand_as(out.video_pred))
    randomize_zero_init(model)
    out = model(**inputs, target_noise=torch.randn_like(inputs["noisy_future"]))
    out.video_loss.backward()
    assert model.keypoints.convs[0].weight.grad.abs().sum() > 0
    detached = VideoActionDiT(make_config("tiny", video_head="conv", cond_stem="conv", img_size=32, patch_size=8))
    detached.load_state_dict(model.state_dict())
    detached(**inputs, target_noise=torch.randn_like(inputs["noisy_future"])).video_loss.backward()
    assert detached.keypoints.convs[0].weight.grad is None  # the default: the head reads the map as it is
    with torch.no_grad():
        model.final_layer.linear.weight.zero_()  # cut the tokens: only the convolutions remain
        model.final_layer.linear.bias.zero_()
        a = model(**inputs).video_pred
        noisy = inputs["noisy_future"].clone()
        noisy[:, 0, :, 12:16, 12:16] += 1.0  # one 4x4 block of the first future frame
        b = model(**dict(inputs, noisy_future=noisy)).video_pred
    diff = (a - b).abs().amax(dim=(0, 2))  # (T, H, W)
    assert diff[0, 12:16, 12:16].max() > 0 and not diff[1:].any()
    far = diff[0].clone()
    far[4:24, 4:24] = 0  # within two cells of the block
    assert far.max() < 0.2 * diff[0, 12:16, 12:16].max()
    small = VideoActionDiT(make_config("small", action_dim=7, video_head="linear"))
    conv = VideoActionDiT(make_config("small", action_dim=7, video_head="conv"))
    assert conv.estimate_flops()["forward"] > small.estimate_flops()["forward"]
    with pytest.raises(ConfigError, match="video_head='conv'.*keypoints > 0"):
        make_config("tiny", video_head="conv", keypoints=0)
    with pytest.raises(ConfigError, match="video_head='bogus' is not one of"):
        make_config("tiny", video_head="bogus")
    assert ModelConfig.from_dict({k: v for k, v in make_config("tiny").to_dict().items()
                                  if k != "video_head"}).video_head == "linear"


def test_action_layers_deepen_the_action_mlp_and_old_configs_keep_one():
    cfg = make_config("tiny", action_layers=3)
    model = VideoActionDiT(cfg)
    linears = [m for m in model.action_head if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [cfg.action_hidden] * 3 + [cfg.action_dim]
    out = model(**make_inputs(cfg))
    assert out.actions.shape == (2, cfg.n_future, cfg.action_dim)
    shallow = VideoActionDiT(make_config("tiny"))
    extra = model.estimate_flops()["forward"] - shallow.estimate_flops()["forward"]
    assert extra == 2 * 2 * cfg.n_future * cfg.action_hidden**2  # two more hidden matmuls per future frame
    assert ModelConfig.from_dict({k: v for k, v in make_config("tiny").to_dict().items()
                                  if k != "action_layers"}).action_layers == 1
    with pytest.raises(ConfigError, match="action_layers=0 must be a positive integer"):
        make_config("tiny", action_layers=0)


def test_bc_keypoint_layout_is_the_image_bc_encoder():
    from policies.bc import BCConfig, BCModel

    cfg = make_config("tiny", keypoints=8, keypoint_channels=8, keypoint_layout="bc", action_from_dit=False)
    model = VideoActionDiT(cfg)
    bc = BCModel(BCConfig(channels=(4, 4, 8, 8)))
    assert [c.weight.shape for c in model.keypoints.convs] == [c.weight.shape for c in bc.convs]
    assert [c.stride for c in model.keypoints.convs] == [c.stride for c in bc.convs]
    frame = torch.rand(2, 3, cfg.img_size, cfg.img_size) * 2 - 1
    lang = torch.randn(2, cfg.lang_dim)
    assert model.keypoints.features(frame, lang).shape == (2, 8, cfg.img_size // 4, cfg.img_size // 4)
    points = model.keypoints(frame, lang)
    assert points.shape == (2, 16) and points.abs().max() <= 1
    with pytest.raises(ConfigError, match="keypoints == keypoint_channels"):
        make_config("tiny", keypoints=4, keypoint_channels=8, keypoint_layout="bc")
    with pytest.raises(ConfigError, match="must be 'dit' or 'bc'"):
        make_config("tiny", keypoint_layout="resnet")
    old = {k: v for k, v in make_config("tiny").to_dict().items() if k != "keypoint_layout"}
    assert ModelConfig.from_dict(old).keypoint_layout == "dit"  # saved before the field


def test_keypoint_decoder_reconstructs_from_the_keypoints_alone_in_training_only():
    """keypoint_decoder=SIDE: an MLP on the keypoints predicts the conditioning frame and the last future frame,
    pooled to SIDE x SIDE; its loss exists only when the clean future is given, and equals the MSE against
    those pooled frames; both readouts give it; a bad side is refused."""
    import torch.nn.functional as F

    cfg = make_config("tiny", state_dim=3, action_from_dit=False, keypoint_decoder=8)
    model = VideoActionDiT(cfg).eval()
    inputs = make_inputs(cfg)
    assert model(**inputs).recon_loss is None  # nothing to reconstruct at inference
    future = torch.rand(2, cfg.n_future, 3, cfg.img_size, cfg.img_size) * 2 - 1
    out = model(**inputs, recon_future=future, recon_weight=3.0)
    plain = model(**inputs)
    keypoints = model.keypoints(inputs["cond_frame"], model.text_encoder(inputs["text_tokens"]))
    pred = model.keypoint_decoder(keypoints).view(2, 2, 3, 8, 8)
    target = torch.stack([F.avg_pool2d(inputs["cond_frame"], cfg.img_size // 8),
                          F.avg_pool2d(future[:, -1], cfg.img_size // 8)], dim=1)
    torch.testing.assert_close(out.recon_loss, F.mse_loss(pred, target))
    torch.testing.assert_close(model.keypoint_actions(inputs["cond_frame"], inputs["text_tokens"], inputs["state"],
                                                      recon_future=future).recon_loss, out.recon_loss)
    assert plain.loss is None and out.loss is not None
    torch.testing.assert_close(out.loss, 3.0 * out.recon_loss)
    # its gradient reaches the keypoint encoder: the keypoints learn where things are without labels
    out.recon_loss.backward()
    assert model.keypoints.convs[0].weight.grad.abs().sum() > 0
    assert VideoActionDiT(make_config("tiny")).keypoint_decoder is None  # off by default
    assert ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "keypoint_decoder"}).keypoint_decoder == 0
    with pytest.raises(ConfigError, match="keypoint_decoder=7"):
        make_config("tiny", keypoint_decoder=7)
    with pytest.raises(ConfigError, match="keypoints > 0"):
        make_config("tiny", keypoints=0, keypoint_decoder=8, cond_stem="conv")


# ----------------------------------------------------------------------------------- the denoising action head
def denoising_head_model(**overrides) -> VideoActionDiT:
    cfg = make_config("tiny", state_dim=3, action_from_dit=False, action_diffusion=20, action_sample_steps=5,
                      **overrides)
    model = VideoActionDiT(cfg).eval()
    randomize_zero_init(model)
    return model


def test_denoising_head_config_is_checked():
    with pytest.raises(ConfigError, match="action_from_dit=false"):
        make_config("tiny", action_diffusion=20)  # the head reads the DiT's states: nothing to denoise from
    with pytest.raises(ConfigError, match="chunk_head=true"):
        make_config("tiny", action_from_dit=False, chunk_head=False, action_diffusion=20)
    with pytest.raises(ConfigError, match="action_sample_steps=30 must be <= action_diffusion=20"):
        make_config("tiny", action_from_dit=False, action_diffusion=20, action_sample_steps=30)
    with pytest.raises(ConfigError, match="action_noise_draws=0"):
        make_config("tiny", action_from_dit=False, action_diffusion=20, action_noise_draws=0)
    # configs saved before the field load with the regression head
    old = make_config("tiny", action_from_dit=False).to_dict()
    del old["action_diffusion"], old["action_sample_steps"], old["action_noise_draws"]
    assert ModelConfig.from_dict(old).action_diffusion == 0


def test_denoising_head_samples_the_chunk_and_trains_on_noisy_chunks():
    model = denoising_head_model()
    cfg, inputs = model.config, make_inputs(model.config, B=3)
    args = (inputs["cond_frame"], inputs["text_tokens"], inputs["state"])
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    first = model.keypoint_actions(*args, generator=gen(1)).actions
    assert first.shape == (3, cfg.n_future, cfg.action_dim)
    torch.testing.assert_close(model.keypoint_actions(*args, generator=gen(1)).actions, first)  # seeded
    assert not torch.allclose(model.keypoint_actions(*args, generator=gen(2)).actions, first)  # a sample, not a mean
    target = torch.randn(3, cfg.n_future, cfg.action_dim, generator=gen(3))
    trained = model.keypoint_actions(*args, target_actions=target, generator=gen(4))
    assert trained.actions is None and trained.action_loss.ndim == 0
    trained.action_loss.backward()
    assert model.action_head[0].weight.grad.abs().sum() > 0
    assert model.keypoints.convs[0].weight.grad.abs().sum() > 0  # the loss trains the encoder the keypoints come from
    # forward() with targets (the trainer's path when every sample runs the transformer) gives the same loss
    out = model(**inputs, target_actions=target)
    assert out.actions is None and out.action_loss.ndim == 0


def test_denoising_head_sampler_recovers_the_chunk_from_an_oracle_prediction():
    """DDIM with a head that knows the clean chunk returns exactly that chunk, whatever the starting noise."""
    model = denoising_head_model()
    cfg = model.config
    chunk = torch.randn(2, cfg.n_future * cfg.action_dim, generator=torch.Generator().manual_seed(0))

    model._predict_action_x0 = lambda inputs, noisy, k: chunk
    inputs = torch.zeros(2, 2 * cfg.keypoints + cfg.state_dim)
    for seed in (0, 1):
        sampled = model.sample_actions(inputs, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(sampled, chunk.view(2, cfg.n_future, cfg.action_dim), atol=1e-4, rtol=1e-4)
