"""Input representations and their documented mapping to network input."""

from __future__ import annotations

import numpy as np
import pytest

from affpipe.cnn.inputs import branch_tensor, channel_stats, parse_input, to_unit
from affpipe.errors import ConfigError


def test_parse_inputs():
    dfm = parse_input("dfm")
    assert dfm.stores == ("dynamic",) and dfm.branch_channels == [3]
    pair = parse_input("dfa+dfs")
    assert [b.name for b in pair.branches] == ["dfa", "dfs"] and pair.branch_channels == [3, 3]
    mdr = parse_input("mdr", mdr_levels=[3, 5])
    assert mdr.stores == ("static", "dr") and mdr.branch_channels == [9]
    assert [c.dataset for c in mdr.branches[0].components] == ["sfa", "dr_T3", "dr_T5"]
    assert parse_input("sfa+dfm").stores == ("static", "dynamic")
    with pytest.raises(ConfigError, match="unknown input representation 'dfx'"):
        parse_input("dfx")
    with pytest.raises(ConfigError, match="at most two"):
        parse_input("dfa+dfs+dfm")
    with pytest.raises(ConfigError, match="repeats"):
        parse_input("dfa+dfa")


def test_maxabs_keeps_zero_and_sign():
    x = np.zeros((4, 4, 3), np.float32)
    x[0, 0] = 2.0
    x[1, 1] = -1.0
    u = to_unit(x, real=True, scaling="maxabs")
    assert u.dtype == np.float32
    assert u[2, 2, 0] == 0.5 and u[0, 0, 0] == 1.0 and u[1, 1, 0] == 0.25
    # the same image at another amplitude maps to the same input
    assert np.array_equal(to_unit(3 * x, real=True, scaling="maxabs"), u)
    assert np.all(to_unit(np.zeros((2, 2, 3)), real=True) == 0.5)


def test_minmax_and_uint8():
    x = np.array([[[-1.0, 0.0, 3.0]]], np.float32)
    u = to_unit(x, real=True, scaling="minmax")
    assert np.allclose(u, [[[0.0, 0.25, 1.0]]])
    assert np.all(to_unit(np.full((2, 2, 3), 7.0), real=True, scaling="minmax") == 0.5)
    img = np.array([[[0, 51, 255]]], np.uint8)
    assert np.allclose(to_unit(img, real=False), [[[0.0, 0.2, 1.0]]])
    with pytest.raises(ConfigError):
        to_unit(x, real=True, scaling="zscore")


def test_branch_tensor_channels_first_and_normalised():
    spec = parse_input("mdr")
    comps = spec.branches[0].components
    sfa = np.full((5, 5, 3), 255, np.uint8)
    dr = np.zeros((5, 5, 3), np.float32)
    dr[0, 0, 0] = -4.0
    mean, std = channel_stats([0.5], 9, what="input_mean"), channel_stats([0.5], 9, what="input_std")
    x = branch_tensor([sfa, dr, dr], comps, scaling="maxabs", mean=mean, std=std)
    assert x.shape == (9, 5, 5) and x.dtype == np.float32
    assert np.all(x[:3] == 1.0) and x[3, 0, 0] == -1.0 and x[3, 1, 1] == 0.0
    assert channel_stats([0.1, 0.2, 0.3], 9, what="m").ravel().tolist() == pytest.approx([0.1, 0.2, 0.3] * 3)
    with pytest.raises(ConfigError, match="cnn.input_std has 2 values; the input has 9"):
        channel_stats([1, 2], 9, what="input_std")
