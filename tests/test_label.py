"""`gr2-sim label` (IDM pseudo-actions for action-free robot video) and `train --extra-data`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gr2_sim.cli import main
from gr2_sim.data import concat_episodes, iter_images, load_episodes, open_h5
from gr2_sim.dataset import Normalizer
from gr2_sim.errors import UserError
from gr2_sim.label import label_episode

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_label_episode_gives_each_transition_the_action_read_at_its_first_frame():
    """A stand-in IDM that answers with the state it is given: the label of pair (o_t, o_t+1) is state t."""

    class StateIDM(torch.nn.Module):
        config = SimpleNamespace(state_dim=8)

        def forward(self, before, after, state, state_next=None):
            assert state_next is None  # a model without next_state is given the first state only
            assert before.shape == after.shape and not torch.equal(before, after)  # consecutive, distinct frames
            return state[:, :7]

    identity = Normalizer(np.zeros(7, np.float32), np.ones(7, np.float32), np.zeros(8, np.float32),
                          np.ones(8, np.float32))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (11, 64, 64, 3), dtype=np.uint8)
    states = rng.normal(size=(11, 8)).astype(np.float32)
    labels = label_episode(StateIDM(), identity, images, states, "cpu", batch_size=4)  # several batches
    np.testing.assert_allclose(labels, states[:-1, :7], rtol=1e-6, atol=1e-6)
    scaled = Normalizer(np.full(7, 2.0, np.float32), np.full(7, 3.0, np.float32), np.zeros(8, np.float32),
                        np.ones(8, np.float32))
    np.testing.assert_allclose(label_episode(StateIDM(), scaled, images, states, "cpu"), 3 * states[:-1, :7] + 2,
                               rtol=1e-5, atol=1e-5)  # unnormalised with the IDM's action statistics


def test_label_then_train_on_demos_and_labelled_video(demo_file, dataset_writer, tmp_path, capsys):
    video = dataset_writer(tmp_path / "video.hdf5", episodes=5, kind="robot_video", seed=7)
    idm = tmp_path / "idm"
    assert main(["train", "--stage", "idm", "--data", str(demo_file), "--steps", "2", "--batch-size", "4",
                 "--set", "next_state=true", "--no-progress", "--out", str(idm)]) == 0
    assert json.loads((idm / "config.json").read_text())["model"]["next_state"] is True
    out = tmp_path / "labelled.hdf5"
    assert main(["label", "--idm", str(idm), "--data", str(video), "--out", str(out), "--no-progress"]) == 0
    labelled, source = load_episodes(out, split="all"), load_episodes(video, split="all")
    assert labelled.kind == "demos" and labelled.num_episodes == 5
    assert labelled.actions.shape == (len(source.rewards), 7)
    np.testing.assert_array_equal(labelled.images, source.images)
    assert labelled.instructions == source.instructions
    with open_h5(out) as f:
        config = json.loads(f["data"].attrs["config"])
    assert config["labels"] == "inverse dynamics" and config["idm"] == str(idm) and config["source"] == str(video)
    # refused: an existing output, demonstrations as the input
    assert main(["label", "--idm", str(idm), "--data", str(video), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["label", "--idm", str(idm), "--data", str(demo_file), "--out", str(tmp_path / "x.hdf5")]) == 2
    assert "labels robot video" in capsys.readouterr().err
    # phase 3 on the demonstrations and the labelled video together
    run = tmp_path / "run"
    assert main(["train", "--stage", "action", "--data", str(demo_file), "--demos", "3", "--extra-data", str(out),
                 "--preset", "tiny", "--steps", "2", "--no-progress", "--out", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["extra_data"] == [str(out)] and saved["demos"] == 3
    other = dataset_writer(tmp_path / "other.hdf5", episodes=2, env_id="Test/Other-v0")
    assert main(["train", "--stage", "action", "--data", str(demo_file), "--extra-data", str(other),
                 "--preset", "tiny", "--steps", "1", "--no-progress", "--out", str(tmp_path / "bad")]) == 2
    assert "same task" in capsys.readouterr().err


def test_concat_episodes_keeps_every_episode_whole(demo_file, dataset_writer, tmp_path):
    a = load_episodes(demo_file, max_demos=3)
    b = load_episodes(dataset_writer(tmp_path / "b.hdf5", episodes=4, length=7, seed=3), split="all")
    both = concat_episodes(a, b)
    assert both.num_episodes == 7 and both.demo_keys[3].startswith("1/")
    for i, (part, j) in enumerate([(a, 0), (a, 1), (a, 2), (b, 0), (b, 1), (b, 2), (b, 3)]):
        got, want = both.episode(i), part.episode(j)
        for key in ("images", "states", "actions", "rewards"):
            np.testing.assert_array_equal(got[key], want[key])
        assert got["instruction"] == want["instruction"]
    video = load_episodes(dataset_writer(tmp_path / "v.hdf5", episodes=2, kind="robot_video"), split="all")
    with pytest.raises(Exception, match="with and without actions"):
        concat_episodes(a, video)


def test_next_state_idm_reads_each_pairs_own_two_states():
    from policies.inverse_dynamics import IDMConfig, InverseDynamicsModel

    with pytest.raises(Exception, match="needs a state"):
        IDMConfig(state_dim=0, next_state=True)
    torch.manual_seed(0)
    idm = InverseDynamicsModel(IDMConfig(img_size=16, state_dim=3, channels=(8, 8), next_state=True)).eval()
    cond, future = torch.rand(2, 3, 16, 16), torch.rand(2, 4, 3, 16, 16)
    state, future_state = torch.randn(2, 3), torch.randn(2, 4, 3)
    chunk = idm.chunk_actions(cond, future, state, future_state)
    frames, states = torch.cat([cond[:, None], future], 1), torch.cat([state[:, None], future_state], 1)
    for k in range(4):
        torch.testing.assert_close(chunk[:, k], idm(frames[:, k], frames[:, k + 1], states[:, k], states[:, k + 1]))
    with pytest.raises(Exception, match="states of the future frames"):
        idm.chunk_actions(cond, future, state)


def test_state_products_join_the_head_and_old_configs_load_without_them():
    from policies.inverse_dynamics import IDMConfig, InverseDynamicsModel

    new = IDMConfig.from_dict({"img_size": 16, "state_dim": 3, "channels": [8, 8], "next_state": True}, saved=False)
    assert new.state_products and InverseDynamicsModel(new).head[0].in_features == 8 + 2 * 3 + 3 * 3
    old = IDMConfig.from_dict({"img_size": 16, "state_dim": 3, "channels": [8, 8], "next_state": True})
    assert not old.state_products and InverseDynamicsModel(old).head[0].in_features == 8 + 2 * 3
    model = InverseDynamicsModel(new).eval()
    frames, state = torch.rand(2, 3, 16, 16), torch.randn(2, 3)
    same = model(frames, frames, state, state)
    moved = model(frames, frames, state, state + torch.tensor([0.0, 0.0, 0.1]))
    assert not torch.allclose(same, moved)  # the state's change reaches the head


def test_iter_images_walks_the_episodes_asked_for_one_at_a_time(dataset_writer, tmp_path):
    path = dataset_writer(tmp_path / "v.hdf5", episodes=4, kind="robot_video", seed=5)
    whole, meta = load_episodes(path, split="all"), load_episodes(path, split="all", load_images=False)
    assert meta.images is None
    keys = [meta.demo_keys[2], meta.demo_keys[0]]
    got = list(iter_images(path, keys))
    for frames, i in zip(got, (2, 0), strict=True):
        np.testing.assert_array_equal(frames, whole.episode(i)["images"])
    with pytest.raises(UserError, match="demo_99"):
        list(iter_images(path, ["demo_99"]))
