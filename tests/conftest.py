"""Shared fixtures: small dataset files written directly (no simulation), so training tests are fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gr2_sim.data import DatasetWriter, Episode


def moving_square_episode(rng: np.random.Generator, length: int, size: int, with_actions: bool, state_dim: int):
    """A colored square that moves by the episode's actions: learnable, cheap, deterministic."""
    pos = rng.integers(8, size - 8, 2).astype(float)
    color = rng.integers(60, 255, 3)
    actions = rng.uniform(-1, 1, (length - 1, 7)).astype(np.float32)
    images = np.zeros((length, size, size, 3), np.uint8)
    states = np.zeros((length, state_dim), np.float32)
    for t in range(length):
        x, y = np.clip(pos, 4, size - 5).astype(int)
        images[t, y - 4:y + 4, x - 4:x + 4] = color
        states[t, :min(2, state_dim)] = (pos / size)[:state_dim]
        if t < length - 1:
            pos = pos + 3 * actions[t, :2]
    return Episode(images=images, states=states, actions=actions if with_actions else None,
                   rewards=np.zeros(length - 1, np.float32), dones=np.eye(1, length - 1, length - 2)[0],
                   instruction="move the red square" if state_dim else "", seed=int(rng.integers(1000)),
                   success=True)


def write_dataset(path, episodes: int = 12, length: int = 10, size: int = 64, kind: str = "demos",
                  state_dim: int = 8, seed: int = 0, env_id: str = "Test/Squares-v0", env_kwargs: dict | None = None):
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, env_id=env_id, env_kwargs=env_kwargs, kind=kind, image_size=size) as writer:
        for _ in range(episodes):
            writer.append(moving_square_episode(rng, length, size, kind == "demos", state_dim))
    return path


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "demos.hdf5")


@pytest.fixture(scope="session")
def video_file(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "synth.hdf5", kind="synthetic", state_dim=0)


@pytest.fixture(scope="session")
def dataset_writer():
    """``write_dataset`` itself, for tests that need their own file (another env id, kwargs, state size)."""
    return write_dataset


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread, and OpenMP spin-waits badly when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
