import pytest
import torch

from nudiff.models import UNet


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: a second thread only adds sync cost, which explodes on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(**kw) -> UNet:
    cfg = dict(
        in_channels=2,
        channels=8,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_levels=(1,),
        head_channels=8,
        norm_groups=4,
    )
    cfg.update(kw)
    return UNet(**cfg)


def perturb_(net: UNet, scale: float = 0.1) -> UNet:
    """Add noise to every parameter so zero-initialised layers stop blocking the signal."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


def test_shapes_at_several_sizes_and_float64():
    torch.manual_seed(0)
    net = small(out_channels=5)
    assert net.downsample_factor == 4
    for h, w in [(8, 8), (16, 16), (32, 24)]:
        out = net(torch.randn(3, 2, h, w), torch.randn(3))
        assert out.shape == (3, 5, h, w)
    net64 = small().double()
    out = net64(torch.randn(2, 2, 8, 12, dtype=torch.float64), torch.randn(2, dtype=torch.float64))
    assert out.shape == (2, 2, 8, 12) and out.dtype == torch.float64


def test_fresh_net_outputs_zero_then_depends_on_inputs():
    torch.manual_seed(0)
    net = small(noise_features=3)
    x, c = torch.randn(2, 2, 16, 16), torch.randn(2, 3)
    assert torch.equal(net(x, c), torch.zeros_like(x))
    perturb_(net)
    out = net(x, c)
    assert out.abs().max() > 0
    assert not torch.allclose(out, net(x, c + 0.5))
    assert not torch.allclose(out, net(x + 0.5, c))
    # Each sample's output depends only on its own noise level.
    c2 = c.clone()
    c2[1] += 1.0
    out2 = net(x, c2)
    assert torch.allclose(out[0], out2[0], atol=1e-6) and not torch.allclose(out[1], out2[1])


def test_c_noise_vector_equals_column():
    torch.manual_seed(0)
    net = perturb_(small())
    x, c = torch.randn(2, 2, 8, 8), torch.randn(2)
    assert torch.equal(net(x, c), net(x, c[:, None]))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = perturb_(small(dropout=0.1, noise_features=2))
    x, c = torch.randn(2, 2, 16, 8), torch.randn(2, 2)
    (net(x, c) - x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("x", "c", "match"),
    [
        (torch.randn(2, 8, 8), torch.randn(2), "rank-4"),
        (torch.randn(2, 3, 8, 8), torch.randn(2), "2 channels"),
        (torch.randn(2, 2, 8, 6), torch.randn(2), "downsample_factor=4"),
        (torch.randn(2, 2, 8, 8), torch.randn(3), "c_noise must have shape"),
        (torch.randn(2, 2, 8, 8), torch.randn(2, 2), "c_noise must have shape"),
    ],
)
def test_input_errors(x, c, match):
    with pytest.raises(ValueError, match=match):
        small()(x, c)


def test_feature_count_mismatch_and_bad_config():
    with pytest.raises(ValueError, match="c_noise"):
        small(noise_features=3)(torch.randn(2, 2, 8, 8), torch.randn(2))
    with pytest.raises(ValueError, match="attn_levels"):
        small(attn_levels=(3,))
    with pytest.raises(ValueError, match="even"):
        small(channels=7)


def test_norm_groups_and_heads_fit_awkward_widths():
    net = UNet(in_channels=1, channels=10, channel_mult=(1, 3), attn_levels=(1,), head_channels=4)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert {(m.num_channels, m.num_groups) for m in norms} == {
        (10, 10),
        (20, 20),
        (30, 30),
        (40, 20),
        (60, 30),
    }
    heads = {m.heads for m in net.modules() if hasattr(m, "heads")}
    assert heads == {6}  # 30 // 4 = 7 heads would not divide 30
    assert net(torch.randn(1, 1, 4, 4), torch.randn(1)).shape == (1, 1, 4, 4)


def tiny_macs(h: int, w: int) -> int:
    """Hand count for ``UNet(1, channels=8, channel_mult=(1,), num_res_blocks=1, emb_mult=2)``."""
    n, c, e = h * w, 8, 16
    emb = 8 * e + e * e
    conv3 = n * c * c * 9
    res = 2 * conv3 + e * 2 * c
    attn = n * 3 * c * c + 2 * n * n * c + n * c * c  # qkv, QK^T and AV, proj
    res_cat = n * c * 2 * c * 9 + e * 2 * c + conv3 + n * 2 * c * c  # 16 -> 8 channels, 1x1 skip
    return emb + n * 9 * c + res + (2 * res + attn) + 2 * res_cat + n * c * 9


def test_count_macs_matches_hand_count():
    net = UNet(1, channels=8, channel_mult=(1,), num_res_blocks=1, attn_levels=(), emb_mult=2)
    for h, w in [(4, 4), (8, 8), (4, 6)]:
        assert net.count_macs(h, w) == tiny_macs(h, w)


def test_count_macs_scaling():
    net = small(attn_levels=())
    m1, m2 = net.count_macs(8, 8), net.count_macs(16, 16)
    assert m1 > 0
    # Only the (resolution-free) embedding linears and the quadratic mid attention break 4x.
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    emb = sum(m.in_features * m.out_features for m in linears)
    mid_c, n = 16, (8 // 4) * (8 // 4)
    assert m2 - 4 * m1 == -3 * emb + 2 * mid_c * (16 * n * n - 4 * n * n)
    # Attention at the lowest level only: the quadratic part stays a small correction.
    net = UNet(3, channels=32, attn_levels=(2,))
    assert 4.0 < net.count_macs(64, 64) / net.count_macs(32, 32) < 4.3
