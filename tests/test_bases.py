import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from nudiff.bases import DCT, PCA, Fourier, Haar, Identity

SHAPES = [(1, 8, 8), (3, 16, 8), (2, 4, 12)]


def make(name, shape):
    if name == "identity":
        return Identity(shape)
    if name == "haar":
        levels = min(int(np.log2(shape[1] & -shape[1])), int(np.log2(shape[2] & -shape[2])))
        return Haar(shape, levels)
    if name == "dct":
        return DCT(shape)
    if name == "fourier":
        return Fourier(shape)
    g = torch.Generator().manual_seed(0)
    return PCA.fit(torch.randn(int(np.prod(shape)) * 2, *shape, generator=g))


NAMES = ["identity", "haar", "dct", "fourier", "pca"]


def matrix_of(basis):
    d = basis.numel
    eye = torch.eye(d, dtype=torch.float64).view(d, *basis.shape)
    return basis(eye).reshape(d, d).T  # column d is the image of e_d


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_and_norm(name, shape):
    basis = make(name, shape)
    x = torch.randn(5, *shape)
    z = basis(x)
    assert z.shape == x.shape
    assert (basis.inverse(z) - x).abs().max() <= 1e-5
    torch.testing.assert_close(
        z.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-5, atol=1e-5
    )
    x64 = x.double()
    assert (basis.inverse(basis(x64)) - x64).abs().max() <= 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_orthonormal_matrix(name):
    basis = make(name, (2, 8, 4))
    m = matrix_of(basis)
    torch.testing.assert_close(
        m @ m.T, torch.eye(m.shape[0], dtype=torch.float64), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_and_batched(name):
    basis = make(name, (1, 8, 8))
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    basis(x).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach(), atol=1e-5, rtol=1e-5)
    one = basis(x[1:2].detach())
    torch.testing.assert_close(one, basis(x.detach())[1:2])


@pytest.mark.parametrize("name", NAMES)
def test_labels_and_groups(name):
    basis = make(name, (3, 8, 8))
    labels = basis.labels()
    assert "frequency" in labels
    for v in labels.values():
        assert v.shape == (3, 8, 8)
    assert basis.label().shape == (3, 8, 8)
    index, names = basis.groups()
    assert index.shape == (3, 8, 8) and index.dtype == torch.long
    assert sorted(torch.unique(index).tolist()) == list(range(len(names)))


def test_haar_bands_match_average_pooling():
    shape = (3, 32, 16)
    haar = Haar(shape, 3)
    x = torch.randn(4, *shape, dtype=torch.float64)
    z = haar(x)
    for level in range(4):
        pooled = F.avg_pool2d(x, 2**level) if level else x
        torch.testing.assert_close(haar.lowres(z, level), pooled, atol=1e-12, rtol=0)
        # the remaining bands are the coarse Haar transform of 2^level * pooled image
        coarse = haar.coarse_basis(level)
        torch.testing.assert_close(
            haar.coarse(z, level), coarse(pooled * 2**level), atol=1e-12, rtol=0
        )
        # and back: the low-res image restores those bands, the others come from z
        torch.testing.assert_close(haar.from_lowres(pooled, level, z), z, atol=1e-12, rtol=0)
    # the approximation band equals 2^L * avg-pool
    torch.testing.assert_close(z[..., :4, :2], 8 * F.avg_pool2d(x, 8), atol=1e-12, rtol=0)


def test_haar_levels_and_groups():
    haar = Haar((1, 16, 16), 2)
    level = haar.level_map()
    assert (level[0, :4, :4] == 3).all()  # approximation
    assert (level[0, :8, 4:8] == 2).all() and (level[0, 8:, :] == 1).all()
    index, names = haar.groups()
    assert len(names) == 3
    counts = torch.bincount(index.flatten()).tolist()
    assert counts == [192, 48, 16]


def test_dct_matches_scipy():
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 12))
    z = DCT((3, 8, 12))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(z, scipy.fft.dctn(x, axes=(-2, -1), norm="ortho"), atol=1e-12)


def test_fourier_diagonalises_stationary_periodic_covariance():
    h = w = 8
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).double()
    diff = (pos[:, None] - pos[None]).abs()
    diff = torch.minimum(diff, torch.tensor([h, w]) - diff)  # periodic distance
    cov = torch.exp(-(diff**2).sum(-1) / 4.0)  # isotropic stationary kernel
    m = matrix_of(Fourier((1, h, w)))
    c = m @ cov @ m.T
    off = c - torch.diag(torch.diagonal(c))
    assert off.abs().max() < 1e-10 * c.abs().max()


def test_pca_decorrelates_and_saves():
    g = torch.Generator().manual_seed(1)
    shape = (1, 4, 4)
    mix = torch.randn(16, 16, generator=g, dtype=torch.float64)
    data = (torch.randn(4000, 16, generator=g, dtype=torch.float64) @ mix).view(-1, *shape)
    pca = PCA.fit(data)
    assert (pca.variances[1:] <= pca.variances[:-1]).all()
    z = pca(data).flatten(1)
    cov = torch.cov(z.T)
    torch.testing.assert_close(torch.diagonal(cov), pca.variances, rtol=1e-6, atol=1e-8)
    assert (cov - torch.diag(torch.diagonal(cov))).abs().max() < 1e-8 * cov.abs().max()
    loaded = PCA(shape)
    loaded.load_state_dict(pca.state_dict())
    torch.testing.assert_close(loaded(data[:3]), pca(data[:3]))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="levels=3 needs H and W divisible by 2\\^levels = 8"):
        Haar((1, 12, 16), 3)
    with pytest.raises(ValueError, match="levels must be >= 0"):
        Haar((1, 8, 8), -1)
    with pytest.raises(ValueError, match="PCA needs more samples than dimensions \\(16\\)"):
        PCA.fit(torch.randn(10, 1, 4, 4))
    basis = DCT((3, 8, 8))
    with pytest.raises(ValueError, match="x must have rank 4"):
        basis(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match=r"x must have \(C, H, W\) = \(3, 8, 8\)"):
        basis(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="level must be in"):
        Haar((1, 8, 8), 2).lowres(torch.zeros(1, 1, 8, 8), 3)
