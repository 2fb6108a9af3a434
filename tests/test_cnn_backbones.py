"""Backbone factory, VGG-16 layout, two-branch regressor and loading of user weights."""

from __future__ import annotations

import pytest
import torch

from affpipe.cnn import backbones as bb
from affpipe.cnn.backbones import PerFrameRegressor, create_backbone, inflate_conv, load_pretrained
from affpipe.errors import AffpipeError, ConfigError

torch.set_num_threads(1)

# torchvision's VGG-16: 14,714,688 conv parameters, fc6 25088*4096 + 4096
VGG16_CONV_PARAMS = 14_714_688
VGG16_FC6_PARAMS = 102_764_544


@pytest.fixture(scope="module")
def vgg3():
    torch.manual_seed(0)
    return create_backbone("vgg16", in_channels=3)


def test_vgg16_matches_torchvision_layout_and_gives_fc6_features(vgg3):
    conv = sum(p.numel() for p in vgg3.features.parameters())
    assert conv == VGG16_CONV_PARAMS
    assert sum(p.numel() for p in vgg3.fc6.parameters()) == VGG16_FC6_PARAMS
    convs = [k for k in vgg3.state_dict() if k.startswith("features.") and k.endswith(".weight")]
    assert convs[0] == "features.0.weight" and convs[-1] == "features.28.weight" and len(convs) == 13
    vgg3.eval()
    with torch.no_grad():
        for size in (32, 64):
            f = vgg3.forward_features(torch.randn(2, 3, size, size))
            assert f.shape == (2, 4096) and (f >= 0).all()  # fc6 after ReLU


@pytest.mark.parametrize("name,dims", [("vgg16", {"low": 128, "high": 512, "fc": 4096}),
                                       ("small", {"low": 32, "high": 128, "fc": 256})])
def test_taps_are_the_pooled_2nd_and_last_pool_and_fc(name, dims, vgg3):
    net = vgg3 if name == "vgg16" else create_backbone("small", in_channels=3).eval()
    net.eval()
    assert net.tap_dims == dims
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        taps = net.forward_taps(x)
        assert {k: tuple(v.shape) for k, v in taps.items()} == {k: (2, w) for k, w in dims.items()}
        assert torch.equal(taps["fc"], net.forward_features(x))  # fc is exactly the features
        # by hand: the spatial mean of the 2nd and of the last max-pooling layer's output
        if name == "vgg16":
            pools = [m for m in net.features if isinstance(m, torch.nn.MaxPool2d)]
            maps, h = {}, x
            for m in net.features:
                h = m(h)
                if m is pools[1]:
                    maps["low"] = h
            maps["high"] = h
            assert maps["low"].shape[1:] == (128, 10, 10) and maps["high"].shape[1:] == (512, 1, 1)
        else:
            low = net.blocks[0](net.stem(x))
            maps = {"low": low, "high": net.blocks[2](net.blocks[1](low))}
            assert maps["low"].shape[1:] == (32, 5, 5) and maps["high"].shape[1:] == (128, 1, 1)
        for k in ("low", "high"):
            assert torch.allclose(taps[k], maps[k].mean(dim=(2, 3)), atol=1e-6)


def test_two_branch_taps_are_concatenated_per_tap():
    torch.manual_seed(0)
    m = PerFrameRegressor("small", branch_channels=[3, 9], dropout=0.0).eval()
    a, b = torch.randn(3, 3, 32, 32), torch.randn(3, 9, 32, 32)
    with torch.no_grad():
        taps = m.forward_taps([a, b])
        ta, tb = m.branches[0].forward_taps(a), m.branches[1].forward_taps(b)
        for k in bb.TAP_NAMES:
            assert torch.equal(taps[k], torch.cat([ta[k], tb[k]], 1))
        assert torch.equal(taps["fc"], m.forward_features([a, b]))
    assert m.tap_dims == {"low": 64, "high": 256, "fc": 512}


def test_small_backbone_and_factory_errors():
    net = create_backbone("small", in_channels=9)
    assert net.forward_features(torch.randn(3, 9, 48, 48)).shape == (3, bb.SMALL_FEATURES)
    with pytest.raises(ConfigError, match="unknown backbone 'resnet'"):
        create_backbone("resnet")
    with pytest.raises(ConfigError, match="at least 32x32"):
        create_backbone("vgg16", input_size=16)


def test_two_branch_features_are_the_branch_features_concatenated():
    torch.manual_seed(0)
    m = PerFrameRegressor("small", branch_channels=[3, 3], dropout=0.0).eval()
    a, b = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        f = m.forward_features([a, b])
        assert f.shape == (4, 2 * bb.SMALL_FEATURES)
        assert torch.equal(f, torch.cat([m.branches[0].forward_features(a), m.branches[1].forward_features(b)], 1))
        assert torch.equal(m([a, b]), m.forward_head(f))
        assert m([a, b]).shape == (4, 2)
    with pytest.raises(ValueError, match="2 branches"):
        m.forward_features([a])


def test_inflate_conv_keeps_the_response_to_a_repeated_image():
    w = torch.randn(8, 3, 3, 3)
    x = torch.randn(1, 3, 10, 10)
    y = torch.nn.functional.conv2d(x, w)
    x9 = x.repeat(1, 3, 1, 1)
    assert torch.allclose(torch.nn.functional.conv2d(x9, inflate_conv(w, 9, mode="repeat")), y, atol=1e-5)
    mean = inflate_conv(w, 9, mode="mean")
    assert mean.shape == (8, 9, 3, 3) and torch.allclose(mean[:, 0], w.mean(1) / 3)


@pytest.fixture()
def reduced_vgg(monkeypatch):
    """VGG-16 with the real 13 convolutions but a 64-wide fc6 on 1x1 pooling (fast to build and save)."""
    monkeypatch.setattr(bb, "VGG_FC", 64)
    monkeypatch.setattr(bb, "VGG_POOL", 1)
    torch.manual_seed(0)
    return create_backbone("vgg16", in_channels=3)


def _vggface_state(vgg):
    """vgg's weights under VGG-Face (Caffe) layer names, plus fc7 and a 2622-way fc8."""
    names = {v: k for k, v in bb.VGGFACE_NAMES.items()}
    state = {}
    for key, value in vgg.state_dict().items():
        layer, _, param = key.rpartition(".")
        state[f"{names[layer]}.{param}"] = value.clone()
    state["fc7.weight"], state["fc7.bias"] = torch.randn(64, 64) * 0.01, torch.randn(64)
    state["fc8.weight"], state["fc8.bias"] = torch.zeros(2622, 64), torch.zeros(2622)
    return state


def test_load_vggface_weights_and_mdr_channel_mismatch(reduced_vgg, tmp_path):
    vgg3 = reduced_vgg
    path = tmp_path / "vggface.pt"
    torch.save(_vggface_state(vgg3), path)

    m = PerFrameRegressor("vgg16", branch_channels=[3], head_hidden=64)
    rep = load_pretrained(m, path, backbone="vgg16")
    assert torch.equal(m.branches[0].features[28].weight, vgg3.features[28].weight)
    assert torch.equal(m.branches[0].fc6.weight, vgg3.fc6.weight)
    assert "head.fc1.weight (fc7)" in rep["loaded"] and rep["ignored"] == ["fc8.bias", "fc8.weight"]
    assert torch.equal(m.head.fc1.weight, torch.load(path, weights_only=True)["fc7.weight"])

    m9 = PerFrameRegressor("vgg16", branch_channels=[9], head_hidden=64)
    with pytest.raises(AffpipeError) as err:
        load_pretrained(m9, path, backbone="vgg16")
    msg = str(err.value)
    assert str(path) in msg and "features.0.weight" in msg and "3 input channels" in msg and "has 9" in msg
    assert "inflate_first_conv" in msg
    rep = load_pretrained(m9, path, backbone="vgg16", inflate="repeat")
    assert rep["inflated"] == ["features.0.weight"]
    w9 = m9.branches[0].features[0].weight
    assert torch.allclose(w9, inflate_conv(vgg3.features[0].weight, 9, mode="repeat"))
    # torchvision naming loads the same way
    tv = {k.replace("fc6.", "classifier.0."): v for k, v in vgg3.state_dict().items()}
    torch.save(tv, tmp_path / "tv.pt")
    m2 = PerFrameRegressor("vgg16", branch_channels=[3], head_hidden=64)
    load_pretrained(m2, tmp_path / "tv.pt", backbone="vgg16")
    assert torch.equal(m2.branches[0].fc6.weight, vgg3.fc6.weight)


def test_weights_errors_name_file_and_layer(tmp_path):
    m = PerFrameRegressor("small", branch_channels=[3])
    with pytest.raises(AffpipeError, match="does not exist"):
        load_pretrained(m, tmp_path / "missing.pt", backbone="small")
    bad = tmp_path / "bad.pt"
    state = m.branches[0].state_dict()
    state["fc.weight"] = torch.zeros(10, 10)
    torch.save(state, bad)
    with pytest.raises(AffpipeError, match=r"layer 'fc.weight' has shape \(10, 10\)"):
        load_pretrained(m, bad, backbone="small")
    notdict = tmp_path / "list.pt"
    torch.save([1, 2], notdict)
    with pytest.raises(AffpipeError, match="not a state dict"):
        load_pretrained(m, notdict, backbone="small")
    pickled = tmp_path / "pickled.pt"
    torch.save({"fc": object()}, pickled)  # arbitrary objects are refused by weights_only=True
    with pytest.raises(AffpipeError, match="weights_only=True"):
        load_pretrained(m, pickled, backbone="small")
