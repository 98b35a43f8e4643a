"""The HDF5 episode store: round trips, splits, crash recovery and unreadable files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gr2_sim.data import (
    TEST_SEED_START,
    VALID_EVERY,
    DatasetWriter,
    Episode,
    describe,
    load_episodes,
    split_keys,
)
from gr2_sim.errors import UserError

SIZE = 16


def make_episode(rng: np.random.Generator, n: int, actions: bool = True, state_dim: int = 3, seed: int = 0) -> Episode:
    """n transitions: n + 1 random frames and states, n actions."""
    dones = np.zeros(n, np.uint8)
    dones[-1] = 1
    return Episode(images=rng.integers(0, 256, (n + 1, SIZE, SIZE, 3), dtype=np.uint8),
                   states=rng.normal(size=(n + 1, state_dim)).astype(np.float32),
                   actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32) if actions else None,
                   rewards=rng.normal(size=n).astype(np.float32), dones=dones,
                   instruction=f"task {seed}", seed=seed, success=bool(seed % 2))


def write(path, episodes, kind="demos", **kwargs) -> None:
    with DatasetWriter(path, env_id="Test-v0", env_kwargs={"a": 1}, kind=kind, image_size=SIZE, **kwargs) as w:
        for i, ep in enumerate(episodes):
            w.append(ep, attempt=i)


@pytest.fixture
def episodes():
    rng = np.random.default_rng(0)
    return [make_episode(rng, n=3 + i % 4, seed=i) for i in range(23)]


def test_round_trip_is_exact(tmp_path, episodes):
    path = tmp_path / "d.hdf5"
    write(path, episodes)
    data = load_episodes(path, split="all")
    assert data.num_episodes == len(episodes) and data.kind == "demos" and data.env_id == "Test-v0"
    assert data.images.shape == (sum(len(e.images) for e in episodes), SIZE, SIZE, 3)
    assert data.actions.shape == (sum(len(e.actions) for e in episodes), 2)
    for i, ep in enumerate(episodes):
        got = data.episode(i)
        np.testing.assert_array_equal(got["images"], ep.images)
        np.testing.assert_array_equal(got["states"], ep.states)
        np.testing.assert_array_equal(got["actions"], ep.actions)
        np.testing.assert_array_equal(got["rewards"], ep.rewards)
        assert (got["instruction"], got["seed"], got["success"]) == (ep.instruction, ep.seed, ep.success)
    with h5py.File(path) as f:
        demo = f["data/demo_0"]
        assert demo["obs/image"].compression == "gzip" and demo["obs/image"].chunks == (1, SIZE, SIZE, 3)
        assert demo.attrs["num_samples"] == len(episodes[0].actions) and demo.attrs["num_frames"] == len(episodes[0].images)
        assert f["data"].attrs["total"] == len(episodes) and f["data"].attrs["next_attempt"] == len(episodes)
        train = {k.decode() for k in f["mask/train"][()]}
        valid = {k.decode() for k in f["mask/valid"][()]}
    assert train.isdisjoint(valid) and len(train | valid) == len(episodes)
    assert valid == {f"demo_{i}" for i in range(len(episodes)) if i % VALID_EVERY == VALID_EVERY - 1}
    assert "episodes: 23 (21 train, 2 valid)" in describe(path)


def test_first_n_train_demos_are_nested_and_deterministic(tmp_path, episodes):
    path = tmp_path / "d.hdf5"
    write(path, episodes)
    five, eight = load_episodes(path, max_demos=5), load_episodes(path, max_demos=8)
    assert five.demo_keys == ["demo_0", "demo_1", "demo_2", "demo_3", "demo_4"]
    assert eight.demo_keys[:5] == five.demo_keys and "demo_9" not in load_episodes(path).demo_keys
    np.testing.assert_array_equal(five.images, eight.images[: five.episode_ends[-1]])
    assert load_episodes(path, split="valid").demo_keys == ["demo_9", "demo_19"]
    with pytest.raises(UserError, match="has only 21 train episodes"):
        load_episodes(path, max_demos=22)


def test_video_only_data_has_no_actions(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "v.hdf5"
    write(path, [make_episode(rng, 4, actions=False, state_dim=0, seed=s) for s in range(3)], kind="synthetic")
    data = load_episodes(path, split="all", load_images=False)
    assert data.actions is None and data.images is None and data.states.shape == (15, 0)
    with h5py.File(path) as f:
        assert "actions" not in f["data/demo_0"]
    with pytest.raises(ValueError, match="takes no actions"), DatasetWriter(
            path, env_id="Test-v0", env_kwargs={"a": 1}, kind="synthetic", image_size=SIZE) as w:
        w.append(make_episode(rng, 2, state_dim=0))


def test_long_extra_attrs_become_datasets(tmp_path):
    ep = make_episode(np.random.default_rng(2), 2)
    ep.extra_attrs = {"meta": "x" * 100_000, "clip_kind": "bounce"}
    write(tmp_path / "d.hdf5", [ep])
    with h5py.File(tmp_path / "d.hdf5") as f:
        demo = f["data/demo_0"]
        assert demo.attrs["clip_kind"] == "bounce" and len(demo["meta"][()]) == 100_000


def test_partial_trailing_episode_is_discarded(tmp_path, episodes):
    path = tmp_path / "d.hdf5"
    write(path, episodes[:3])
    with h5py.File(path, "r+") as f:  # what a kill mid-write leaves: a group without the completion mark
        f.create_dataset("data/demo_3/obs/image", data=np.zeros((2, SIZE, SIZE, 3), np.uint8))
        f["data"].attrs["total"] = 1  # and a counter that lags behind
        del f["mask"]
    assert load_episodes(path, split="all").num_episodes == 3
    assert "1 partially written (ignored)" in describe(path)
    with DatasetWriter(path, env_id="Test-v0", env_kwargs={"a": 1}, image_size=SIZE) as w:
        assert (w.total, w.next_attempt) == (3, 3)
        assert w.append(episodes[3], attempt=3) == "demo_3"
    data = load_episodes(path, split="all")
    assert data.num_episodes == 4
    np.testing.assert_array_equal(data.episode(3)["images"], episodes[3].images)


def test_file_made_differently_is_refused_unless_overwrite(tmp_path, episodes):
    path = tmp_path / "d.hdf5"
    write(path, episodes[:2])
    for change in ({"env_id": "Other-v0"}, {"env_kwargs": {"a": 2}}, {"kind": "robot_video"}, {"image_size": 32}):
        args = dict(env_id="Test-v0", env_kwargs={"a": 1}, kind="demos", image_size=SIZE) | change
        with pytest.raises(UserError, match="--overwrite"):
            DatasetWriter(path, **args)
    with DatasetWriter(path, env_id="Other-v0", image_size=SIZE, overwrite=True) as w:
        assert w.total == 0


def test_unreadable_files_raise_user_error_naming_the_file(tmp_path, episodes):
    path = tmp_path / "d.hdf5"
    write(path, episodes[:5])
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(path.read_bytes()[:-2000])
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5\n")
    with h5py.File(tmp_path / "other.hdf5", "w") as f:
        f["x"] = 1
    for bad, why in ((truncated, "truncated"), (text, "not an HDF5 file"), (tmp_path / "other.hdf5", "not a gr2-sim")):
        for action in (lambda p: load_episodes(p), lambda p: DatasetWriter(p, env_id="Test-v0", image_size=SIZE)):
            with pytest.raises(UserError, match=why) as err:
                action(bad)
            assert str(bad) in str(err.value)
    with pytest.raises(UserError, match="no such file"):
        load_episodes(tmp_path / "missing.hdf5")


def test_split_rule():
    keys = [f"demo_{i}" for i in range(25)]
    assert split_keys(keys)["valid"] == ["demo_9", "demo_19"]
    assert split_keys(keys[:4]) == {"train": keys[:3], "valid": ["demo_3"]}
    assert split_keys(keys[:1]) == {"train": keys[:1], "valid": []}
    assert TEST_SEED_START == 1_000_000


def test_a_commit_that_fails_midway_leaves_the_file_as_it_was(tmp_path, episodes, monkeypatch):
    path = tmp_path / "d.hdf5"
    write(path, episodes[:2])
    before = path.read_bytes()
    import gr2_sim.data as data_module
    real = data_module._write_episode
    calls = []

    def crash_on_second(group, *args):
        calls.append(group.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. a second Ctrl-C in the middle of writing
        real(group, *args)

    w = DatasetWriter(path, env_id="Test-v0", env_kwargs={"a": 1}, image_size=SIZE, commit_every=3600)
    w.append(episodes[2], attempt=2)
    w.append(episodes[3], attempt=3)
    monkeypatch.setattr(data_module, "_write_episode", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        w.commit()
    assert path.read_bytes() == before and not path.with_name(path.name + ".tmp").exists()
    assert load_episodes(path, split="all").num_episodes == 2
    monkeypatch.setattr(data_module, "_write_episode", real)
    w.close()  # nothing queued was lost
    data = load_episodes(path, split="all")
    assert data.num_episodes == 4
    np.testing.assert_array_equal(data.episode(3)["images"], episodes[3].images)


def test_commit_every_zero_saves_each_episode_as_it_comes(tmp_path, episodes):
    path = tmp_path / "d.hdf5"
    with DatasetWriter(path, env_id="Test-v0", env_kwargs={"a": 1}, image_size=SIZE, commit_every=0) as w:
        for i, ep in enumerate(episodes[:3]):
            w.append(ep, attempt=i)
            assert load_episodes(path, split="all").num_episodes == i + 1  # readable mid-run, masks included


def test_describe_gives_the_mean_action_baseline_of_the_valid_split(tmp_path, episodes):
    path = tmp_path / "d.hdf5"
    write(path, episodes)
    valid = load_episodes(path, split="valid", load_images=False).actions
    assert f"valid actions: variance {valid.var(axis=0).mean():.4f} per dimension" in describe(path)
    video = tmp_path / "v.hdf5"
    with DatasetWriter(video, env_id="Test-v0", kind="robot_video", image_size=SIZE) as w:
        for ep in episodes[:3]:
            w.append(Episode(ep.images, ep.states, None, ep.rewards, ep.dones))
    assert "valid actions" not in describe(video)  # no actions, no baseline
