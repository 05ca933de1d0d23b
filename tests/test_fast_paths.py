"""Opt-in generation fast paths: same showers, same weights' names, clear errors."""
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import calobench
from calobench import DatasetInfo, Geometry


class ConvGen(calobench.Model):
    name = "convgen"

    def __init__(self, dataset, config, device):
        super().__init__(dataset, config, device)
        torch.manual_seed(0)
        self.nets["g2"] = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
        self.nets["g3"] = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose3d(4, 1, 3, padding=1))

    def sample(self, conditions):
        e = torch.as_tensor(np.asarray(conditions["energy"], np.float32))
        x = e[:, None, None, None, None] * torch.ones(len(e), 1, 6, 6, 4)
        y = self.nets["g3"](x)[:, 0]  # [B, 6, 6, 4]
        z = self.nets["g2"](y.permute(0, 3, 1, 2).reshape(-1, 1, 6, 6))
        return z.reshape(len(e), 4, 6, 6).permute(0, 2, 3, 1).numpy()


def model(**settings):
    info = DatasetInfo("toy", Geometry(shape=(6, 6, 4)), {"energy": (1.0, 10.0)})
    m = ConvGen(info, {}, torch.device("cpu"))
    m.settings = calobench.RunSettings(**settings)
    return m


COND = {"energy": np.linspace(1, 10, 5)}


def test_channels_last_same_showers_and_names():
    plain, fast = model(), model(channels_last=True)
    ref = plain.generate_batch(COND)
    out = fast.generate_batch(COND)
    assert fast.nets["g2"][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.nets["g3"][0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert list(fast.state_dict()) == list(plain.state_dict())


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile needs a C compiler")
def test_compile_same_showers_and_names():
    plain, fast = model(), model(generation_compile=True)
    ref = plain.generate_batch(COND)
    out = fast.generate_batch(COND)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert list(fast.state_dict()) == list(plain.state_dict())  # checkpoints keep their names


def test_bad_settings_are_one_clear_error():
    with pytest.raises(calobench.CalobenchError, match="option 'generation_amp' of the runner"):
        ConvGen.resolve("default", {"generation_amp": "fp8"})
    with pytest.raises(calobench.CalobenchError, match="option 'generation_batch' of the runner"):
        ConvGen.resolve("default", {"generation_batch": -3})


def test_generation_batch_sets_the_runner_block_size():
    from calobench import ShowerData
    from calobench.runner import generate

    m, calls = model(generation_batch=2), []
    orig = m.sample
    m.sample = lambda c: calls.append(len(c["energy"])) or orig(c)
    info = m.dataset
    data = ShowerData(np.zeros((5, 6, 6, 4), np.float32), COND, info.geometry)
    out = generate(m, data)
    assert calls == [2, 2, 1] and out.showers.shape == (5, 6, 6, 4)
    np.testing.assert_allclose(out.showers, model().generate_batch(COND), rtol=1e-5, atol=1e-6)
