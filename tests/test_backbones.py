import pytest
import torch

from nudiff.models.dit import DiT, DiTBlock, sincos_pos_embed_2d
from nudiff.models.lego import (
    LEGO,
    check_bricks,
    coordinate_channels,
    fold_regions,
    lego_stack,
    unfold_regions,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: a second thread only adds sync cost, which explodes on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb_(net: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Add noise to every parameter so zero-initialised layers stop blocking the signal."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


def small_dit(**kw) -> DiT:
    cfg = dict(in_channels=2, patch_size=2, width=16, depth=2, heads=2, mlp_ratio=2.0)
    cfg.update(kw)
    return DiT(**cfg)


BRICKS = [(4, 2, 1, 16), (8, 2, 1, 16), (0, 2, 1, 16)]


def small_lego(**kw) -> LEGO:
    cfg = dict(in_channels=2, bricks=BRICKS, heads=2, mlp_ratio=2.0)
    cfg.update(kw)
    return LEGO(**cfg)


# ---------------------------------------------------------------- regions and coordinates


def test_unfold_fold_round_trip_and_placement():
    x = torch.randn(2, 3, 8, 12)
    for r in [2, 4, 0, None]:
        regions = unfold_regions(x, r)
        assert torch.equal(fold_regions(regions, r, 2, 8, 12), x)
    regions = unfold_regions(x, 4)
    assert regions.shape == (2 * 2 * 3, 3, 4, 4)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                assert torch.equal(
                    regions[(b * 2 + i) * 3 + j], x[b, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
                )
    assert unfold_regions(x, 0) is x
    square = torch.randn(1, 1, 4, 4)
    assert torch.equal(unfold_regions(square, 4), square)  # region = image: one region


def test_unfold_fold_errors():
    with pytest.raises(ValueError, match="divide"):
        unfold_regions(torch.randn(1, 1, 8, 6), 4)
    with pytest.raises(ValueError, match="rank-4"):
        unfold_regions(torch.randn(8, 8), 4)
    with pytest.raises(ValueError, match="must have shape"):
        fold_regions(torch.randn(3, 1, 4, 4), 4, 1, 8, 8)
    with pytest.raises(ValueError, match="divide"):
        fold_regions(torch.randn(4, 1, 4, 4), 4, 1, 8, 6)


def test_coordinate_channels():
    c = coordinate_channels(2, 4, 6)
    assert c.shape == (2, 2, 4, 6)
    assert c.min() > -1 and c.max() < 1
    # Pixel centres: (2 i + 1) / H - 1.
    assert c[0, 0, 0, 0] == -0.75 and c[0, 0, -1, 0] == 0.75
    assert torch.allclose(c[1, 1, 0, [0, -1]], torch.tensor([-5 / 6, 5 / 6]))
    assert torch.equal(c[:, 0], c[:, 0, :, :1].expand(-1, -1, 6))  # rows constant along columns
    assert torch.equal(c[:, 1], c[:, 1, :1].expand(-1, 4, -1))
    assert torch.allclose(c, -c.flip(-1, -2))  # centred
    # A window of a canvas gets the canvas's coordinates.
    window = coordinate_channels(1, 2, 3, canvas=(4, 6), offset=(2, 3), dtype=torch.float64)
    assert torch.equal(window, coordinate_channels(1, 4, 6, dtype=torch.float64)[..., 2:, 3:])
    with pytest.raises(ValueError, match="does not fit"):
        coordinate_channels(1, 2, 3, canvas=(4, 6), offset=(3, 0))


# ---------------------------------------------------------------------------------- DiT


def test_sincos_pos_embed():
    emb = sincos_pos_embed_2d(8, 3, 4)
    assert emb.shape == (12, 8) and emb.dtype == torch.get_default_dtype()
    assert emb.abs().max() <= 1 and len(torch.unique(emb, dim=0)) == 12
    assert torch.equal(emb, sincos_pos_embed_2d(8, 3, 4))
    assert torch.equal(emb[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    grid = emb.view(3, 4, 8)
    assert torch.equal(grid[:, :, :4], grid[:, :1, :4].expand(-1, 4, -1))  # row half
    assert torch.equal(grid[:, :, 4:], grid[:1, :, 4:].expand(3, -1, -1))  # column half
    # A larger grid extends a smaller one; a smaller extent interpolates.
    big = sincos_pos_embed_2d(8, 6, 8).view(6, 8, 8)
    assert torch.equal(big[:3, :4], grid)
    fine = sincos_pos_embed_2d(8, 6, 8, extent_h=3, extent_w=4).view(6, 8, 8)
    assert torch.equal(fine[::2, ::2], grid)
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_pos_embed_2d(6, 2, 2)


def test_dit_shapes_at_several_sizes():
    torch.manual_seed(0)
    net = perturb_(small_dit(out_channels=3))
    assert net.downsample_factor == 2
    for h, w in [(8, 8), (8, 12), (16, 16)]:  # (16, 16): twice the "training" size
        out = net(torch.randn(2, 2, h, w), torch.randn(2))
        assert out.shape == (2, 3, h, w) and out.isfinite().all()
    net = small_dit(coord_channels=2).double()
    assert net.patch_embed.in_channels == 4
    out = net(torch.randn(1, 2, 4, 6, dtype=torch.float64), torch.randn(1, dtype=torch.float64))
    assert out.shape == (1, 2, 4, 6) and out.dtype == torch.float64


def test_dit_outputs_zero_at_init_then_depends_on_inputs():
    torch.manual_seed(0)
    net = small_dit(noise_features=3)
    x, c = torch.randn(2, 2, 8, 8), torch.randn(2, 3)
    assert torch.equal(net(x, c), torch.zeros_like(x))
    perturb_(net)
    out = net(x, c)
    assert out.abs().max() > 0
    assert not torch.allclose(out, net(x, c + 0.5))
    assert not torch.allclose(out, net(x + 0.5, c))
    c2 = c.clone()
    c2[1] += 1.0
    out2 = net(x, c2)  # each sample's output depends only on its own noise level
    assert torch.allclose(out[0], out2[0], atol=1e-6) and not torch.allclose(out[1], out2[1])


def test_dit_blocks_start_as_identity():
    block = DiTBlock(16, 4)
    x = torch.randn(3, 5, 16)
    assert torch.equal(block(x, torch.randn(3, 16)), x)


def test_dit_denoise_shares_conditioning_across_regions():
    torch.manual_seed(0)
    net = perturb_(small_dit())
    x, c = torch.randn(2 * 3, 2, 4, 4), torch.randn(2)
    out = net.denoise(x, net.embed(c[:, None]))
    assert torch.allclose(out, net(x, c.repeat_interleave(3)), atol=1e-6)


def test_dit_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = perturb_(small_dit(noise_features=2, coord_channels=2))
    x, c = torch.randn(2, 2, 8, 4), torch.randn(2, 2)
    (net(x, c) - x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


LOCAL = dict(stem_channels=4, conv_head=True, skips=True)  # the CPU recipe's options


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_dit_local_options_keep_a_fresh_net_at_zero_and_train_every_parameter(depth):
    torch.manual_seed(0)
    net = small_dit(depth=depth, **LOCAL)
    assert len(net.skip_proj) == depth // 2 and net.stem[0].in_channels == 2
    x, c = torch.randn(2, 2, 8, 4), torch.randn(2)
    assert torch.equal(net(x, c), torch.zeros_like(x))
    perturb_(net)
    (net(x, c) - x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dit_skips_join_mirrored_blocks():
    """Depth 4 with skips: block 2 sees [block 1's output, block 1's output], block 3 sees
    [block 2's, block 0's]; an identity-then-zero projection recovers the plain DiT."""
    torch.manual_seed(0)
    plain, skipped = perturb_(small_dit(depth=4)), small_dit(depth=4, skips=True)
    skipped.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        for proj in skipped.skip_proj:
            proj.weight.zero_()
            proj.weight[:, :16] = torch.eye(16)
            proj.bias.zero_()
    x, c = torch.randn(2, 2, 8, 8), torch.randn(2)
    assert torch.allclose(skipped(x, c), plain(x, c), atol=1e-6)
    with torch.no_grad():  # now only the skipped-in tokens pass: the output changes
        for proj in skipped.skip_proj:
            proj.weight[:, :16] = 0
            proj.weight[:, 16:] = torch.eye(16)
    assert not torch.allclose(skipped(x, c), plain(x, c), atol=1e-3)


def test_dit_conv_stem_and_head_add_their_macs():
    net = small_dit(out_channels=3, noise_features=2)
    local = small_dit(out_channels=3, noise_features=2, stem_channels=4, conv_head=True)
    h, w = 8, 8
    stem = h * w * 4 * 2 * 9 + (h * w // 4) * 16 * (4 - 2) * 4  # 3x3 conv; wider patch embed
    assert local.count_macs(h, w) == net.count_macs(h, w) + stem + h * w * 3 * 3 * 9
    with pytest.raises(ValueError, match="stem_channels"):
        small_dit(stem_channels=-1)


def dit_macs(h: int, w: int, regions: int = 1) -> int:
    """Hand count for ``small_dit(out_channels=3, noise_features=2)``: C 2 -> 3, patch 2,
    width 16, depth 2, MLP hidden 32."""
    c_in, c_out, p, d, depth, hidden, f = 2, 3, 2, 16, 2, 32, 2
    n = h * w // p**2  # tokens
    per_image = (f * d * d + d * d) + depth * 6 * d * d + 2 * d * d  # embedding MLP, adaLNs
    block = n * 3 * d * d + 2 * n * n * d + n * d * d + n * 2 * d * hidden  # qkv, QK^T+AV, proj
    per_region = n * d * c_in * p * p + depth * block + n * d * p * p * c_out
    return per_image + regions * per_region


def test_dit_count_macs_matches_hand_count_and_scaling():
    net = small_dit(out_channels=3, noise_features=2)
    for h, w in [(2, 2), (8, 8), (4, 6)]:
        assert net.count_macs(h, w) == dit_macs(h, w)
    assert net.count_macs(4, 4, regions=5) == dit_macs(4, 4, regions=5)
    m1, m2 = net.count_macs(8, 8), net.count_macs(16, 16)
    # Linear in the pixels except the per-image terms (1x) and the attention products (16x).
    per_image = 2 * 16 * 16 + 16 * 16 + 2 * 6 * 16 * 16 + 2 * 16 * 16
    assert m2 - 4 * m1 == -3 * per_image + 2 * 2 * 16 * (64**2 - 4 * 16**2)
    assert m2 > 4 * m1  # at 64 tokens of width 16 attention dominates: ~6x
    with pytest.raises(ValueError, match="divisible"):
        net.count_macs(5, 4)


@pytest.mark.parametrize(
    ("x", "c", "match"),
    [
        (torch.randn(2, 8, 8), torch.randn(2), "rank-4"),
        (torch.randn(2, 3, 8, 8), torch.randn(2), "2 channels"),
        (torch.randn(2, 2, 8, 5), torch.randn(2), "downsample_factor=2"),
        (torch.randn(2, 2, 8, 8), torch.randn(3), "c_noise must have shape"),
        (torch.randn(2, 2, 8, 8), torch.randn(2, 2), "c_noise must have shape"),
    ],
)
def test_dit_input_errors(x, c, match):
    with pytest.raises(ValueError, match=match):
        small_dit()(x, c)


def test_dit_bad_config():
    with pytest.raises(ValueError, match="heads"):
        small_dit(heads=3)
    with pytest.raises(ValueError, match="multiple of 4"):
        small_dit(width=18, heads=1)
    with pytest.raises(ValueError, match="coord_channels"):
        small_dit(coord_channels=1)


# --------------------------------------------------------------------------------- LEGO


def test_lego_shapes_and_resolution():
    torch.manual_seed(0)
    net = perturb_(small_lego(out_channels=3, noise_features=2))
    assert (net.num_bricks, net.downsample_factor) == (3, 8)
    assert (net.in_channels, net.out_channels, net.noise_features) == (2, 3, 2)
    assert [b.dit.in_channels for b in net.bricks] == [4, 7, 7]
    for size in [8, 16, 32]:  # 16 trained: 32 is twice the training size
        out = net(torch.randn(2, 2, size, size), torch.randn(2, 2))
        assert out.shape == (2, 3, size, size) and out.isfinite().all()
    assert net(torch.randn(1, 2, 8, 16), torch.randn(1, 2)).shape == (1, 3, 8, 16)
    assert net.num_parameters() == sum(b.dit.num_parameters() for b in net.bricks)


def test_lego_brick_is_a_shared_dit_per_region():
    torch.manual_seed(0)
    net = perturb_(small_lego())
    x, c = torch.randn(2, 2, 8, 8), torch.randn(2)
    out = net.forward_all(x, c)[0]
    inputs = torch.cat([x, coordinate_channels(2, 8, 8)], dim=1)
    dit = net.bricks[0].dit
    for i, j in [(0, 0), (0, 1), (1, 0)]:
        window = (..., slice(4 * i, 4 * i + 4), slice(4 * j, 4 * j + 4))
        assert torch.allclose(out[window], dit(inputs[window], c), atol=1e-6)
    assert not torch.allclose(out[..., :4, :4], out[..., :4, 4:])  # coordinates tell them apart


def test_lego_outputs_zero_at_init_and_joint_gradients():
    torch.manual_seed(0)
    net = small_lego()
    x, c = torch.randn(2, 2, 8, 8), torch.randn(2)
    assert all(torch.equal(o, torch.zeros_like(x)) for o in net.forward_all(x, c))
    perturb_(net)
    sum((o - x).square().mean() for o in net.forward_all(x, c)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_lego_passes_the_local_options_to_every_brick():
    torch.manual_seed(0)
    net = small_lego(**LOCAL)
    assert all(b.dit.stem is not None and b.dit.head is not None for b in net.bricks)
    assert all(len(b.dit.skip_proj) == 0 for b in net.bricks)  # depth 1: no mirrored pair
    x, c = torch.randn(2, 2, 8, 8), torch.randn(2)
    assert all(torch.equal(o, torch.zeros_like(x)) for o in net.forward_all(x, c))
    perturb_(net)
    window = (..., slice(0, 4), slice(4, 8))  # the first brick stays local with a conv stem
    inputs = torch.cat([x, coordinate_channels(2, 8, 8)], dim=1)
    assert torch.allclose(
        net.forward_all(x, c)[0][window], net.bricks[0].dit(inputs[window], c), atol=1e-6
    )


def test_lego_skipped_bricks_are_never_called():
    torch.manual_seed(0)
    net = perturb_(small_lego())
    calls = [0] * net.num_bricks
    for k, brick in enumerate(net.bricks):
        brick.register_forward_hook(lambda m, i, o, k=k: calls.__setitem__(k, calls[k] + 1))
    x, c = torch.randn(2, 2, 8, 8), torch.randn(2)
    full = net(x, c)
    assert calls == [1, 1, 1]
    net.active_bricks = 2
    skipped = net(x, c)
    assert calls == [2, 2, 1]
    assert not torch.allclose(skipped, full)
    outs = net.forward_all(x, c)  # ignores active_bricks
    assert calls == [3, 3, 2] and len(outs) == 3
    for k in [1, 2, 3]:
        net.active_bricks = k
        assert torch.equal(net(x, c), outs[k - 1])
    net.active_bricks = None
    assert torch.equal(net(x, c), outs[-1])
    for bad in [0, 4, 1.5]:
        with pytest.raises(ValueError, match="number of bricks"):
            net.active_bricks = bad


def lego_macs_by_hooks(net: LEGO, h: int, w: int) -> int:
    """Count what ``net.forward`` actually runs, as ``DiT.count_macs`` counts."""
    macs = 0

    def hook(m, inputs, out):
        nonlocal macs
        if isinstance(m, torch.nn.Linear):
            macs += out.numel() * m.in_features
        elif isinstance(m, torch.nn.Conv2d):
            macs += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        else:
            n, length, d = inputs[0].shape
            macs += 2 * n * length**2 * d

    kinds = (torch.nn.Linear, torch.nn.Conv2d, DiTBlock)
    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        net(torch.zeros(1, net.in_channels, h, w), torch.zeros(1))
    for handle in hooks:
        handle.remove()
    return macs


def test_lego_count_macs():
    net = small_lego()
    # DiT per-image work (embedding MLP, adaLN linears) runs once per image, the rest per region.
    d = 16
    per_image = 16 * d + d * d + 6 * d * d + 2 * d * d
    totals = []
    for k, (region, count) in enumerate([(4, 16), (8, 4), (16, 1)], start=1):
        dit = net.bricks[k - 1].dit
        brick = count * (dit.count_macs(region, region) - per_image) + per_image
        totals.append(brick + (totals[-1] if totals else 0))
        assert net.count_macs(16, 16, bricks=k) == totals[-1]
    assert totals[0] < totals[1] < totals[2] == net.count_macs(16, 16)
    assert net.count_macs(16, 16) == lego_macs_by_hooks(net, 16, 16)
    net.active_bricks = 2
    assert net.count_macs(16, 16) == totals[1] == lego_macs_by_hooks(net, 16, 16)
    assert net.count_macs(16, 16, bricks=3) == totals[2]
    with pytest.raises(ValueError, match="downsample_factor=8"):
        net.count_macs(12, 12)


def test_lego_stack():
    assert lego_stack("pg", 32) == [(4, 2, 2, 64), (16, 2, 2, 64), (32, 2, 2, 64)]
    assert lego_stack("pr", 32, width=32, depth=3) == [
        (32, 2, 3, 32),
        (16, 2, 3, 32),
        (4, 2, 3, 32),
    ]
    assert lego_stack("u", 32, patch=4) == [(32, 4, 2, 64), (8, 4, 2, 64), (32, 4, 2, 64)]
    assert lego_stack("pg", 32, patch=4)[0] == (4, 2, 2, 64)
    assert lego_stack("u", 16, patch=1)[1] == (4, 1, 2, 64)
    with pytest.raises(ValueError, match="kind"):
        lego_stack("x", 32)
    with pytest.raises(ValueError, match="region 4 must divide the resolution 22"):
        lego_stack("pg", 22)
    with pytest.raises(ValueError, match="regions under 4"):
        lego_stack("u", 8)
    with pytest.raises(ValueError, match="patch 8 must divide region 12"):
        lego_stack("pg", 24, patch=8)
    torch.manual_seed(0)
    net = perturb_(LEGO(1, bricks=lego_stack("pg", 16, width=16, depth=1), heads=2))
    assert net.downsample_factor == 16
    assert net(torch.randn(1, 1, 32, 32), torch.randn(1)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize(
    ("x", "c", "match"),
    [
        (torch.randn(2, 8, 8), torch.randn(2), "rank-4"),
        (torch.randn(2, 3, 8, 8), torch.randn(2), "2 channels"),
        (torch.randn(2, 2, 8, 12), torch.randn(2), "downsample_factor=8"),
        (torch.randn(2, 2, 8, 8), torch.randn(3), "c_noise must have shape"),
    ],
)
def test_lego_input_errors(x, c, match):
    with pytest.raises(ValueError, match=match):
        small_lego()(x, c)


def test_check_bricks_and_bad_lego_configs():
    assert check_bricks([[4, 2, 1, 16], [0, 2, 1, 16]], 8) == [(4, 2, 1, 16), (0, 2, 1, 16)]
    for bricks, resolution, match in [
        ([], None, "non-empty"),
        ([(4, 2, 1)], None, "non-empty"),
        ([(4, 2, 0, 16)], None, "depth >= 1"),
        ([(4, 2, 1, 18)], None, "multiple of 4"),
        ([(4, 3, 1, 16)], None, "brick 0: patch 3 must divide region 4"),
        ([(4, 2, 1, 16), (3, 1, 1, 16)], 16, "brick 1: region 3 must divide the resolution 16"),
        ([(0, 4, 1, 16)], 6, "patch 4 .whole-image region. must divide the resolution 6"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_bricks(bricks, resolution)
        if resolution is None:  # structural errors: the model refuses them too
            with pytest.raises(ValueError, match=match):
                small_lego(bricks=bricks)
    with pytest.raises(ValueError, match="heads"):
        small_lego(heads=3)
