"""sample_tokens: greedy exactness, min-p exclusion, determinism, and its distribution
(chi-square against softmax(logits / T) restricted by min-p), as for sample_tokens_ref."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.reference import sample_tokens_ref  # noqa: E402
from titaninfer.kernels.sampling import sample_tokens, sampling_layout  # noqa: E402

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# The interpreter evaluates log(0) and -inf - -inf in numpy, which warns; the kernel masks
# those lanes. On the GPU nothing warns.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _sample(fn, logits, temperature, min_p, seeds, offsets):
    dev = logits.device
    b = logits.shape[0]

    def full(x, dtype):
        return x.to(dev) if isinstance(x, torch.Tensor) else torch.full((b,), x, dtype=dtype,
                                                                         device=dev)
    return fn(logits, full(temperature, torch.float32), full(min_p, torch.float32),
              full(seeds, torch.int64), full(offsets, torch.int64))


def _expected(logits: torch.Tensor, temperature: float, min_p: float) -> torch.Tensor:
    p = torch.softmax(logits.double() / temperature, -1)
    p = torch.where(p >= min_p * p.max(), p, 0.0)
    return p / p.sum()


def _chi_square_ok(counts: torch.Tensor, expected_p: torch.Tensor, n: int) -> tuple[bool, str]:
    exp = expected_p * n
    keep = exp > 0
    assert counts[~keep].sum() == 0, "drew a token that min-p (or T) excludes"
    chi2 = float((((counts[keep] - exp[keep]) ** 2) / exp[keep]).sum())
    dof = int(keep.sum()) - 1
    # ~5 standard deviations above the mean of a chi-square with `dof` degrees of freedom.
    bound = dof + 5 * (2 * dof) ** 0.5 + 5
    tv = 0.5 * float((counts / n - expected_p).abs().sum())
    return chi2 < bound, f"chi2={chi2:.1f} (dof {dof}, bound {bound:.1f}), tv={tv:.4f}"


@pytest.mark.parametrize("v", [5, 1000, 5000])
def test_greedy_is_first_argmax(device, poison_empty, v):
    logits = torch.randn(9, v, device=device)
    logits[3, 1] = logits[3, v - 1] = logits[3].max() + 1  # tie: the first index wins
    logits[4] = float("-inf")  # an all-masked row: token 0, like torch.argmax
    tok = _sample(sample_tokens, logits, 0.0, 0.0, 0, 0)
    assert tok.dtype == torch.int64
    assert torch.equal(tok, logits.argmax(-1))


def test_mixed_greedy_and_sampled_rows(device):
    logits = torch.randn(64, 300, device=device)
    temp = torch.tensor([0.0, 1.0] * 32)
    tok = _sample(sample_tokens, logits, temp, 0.0, torch.arange(64), 0)
    greedy = temp == 0
    assert torch.equal(tok[greedy.to(device)], logits.argmax(-1)[greedy.to(device)])
    assert ((tok >= 0) & (tok < 300)).all()


@pytest.mark.parametrize("fn", [sample_tokens, sample_tokens_ref], ids=["triton", "ref"])
@pytest.mark.parametrize("temperature,min_p", [(1.0, 0.0), (0.7, 0.1), (1.5, 0.02)])
def test_distribution_chi_square(device, fn, temperature, min_p):
    """Many rows with the same logits and different seeds: the token histogram matches
    softmax(logits / T) after min-p (chi-square), and excluded tokens never appear."""
    gen = torch.Generator().manual_seed(1234)
    v = 24
    logits = torch.randn(v, generator=gen) * 2
    n = 6000 if fn is sample_tokens else 3000  # the reference loops in Python
    batch = logits.expand(n, v).contiguous().to(device)
    seeds = torch.randint(0, 2**62, (n,), generator=gen)
    tok = _sample(fn, batch, temperature, min_p, seeds, torch.arange(n) % 7)
    counts = torch.bincount(tok.cpu(), minlength=v).double()
    ok, msg = _chi_square_ok(counts, _expected(logits, temperature, min_p), n)
    assert ok, msg


def test_same_seed_same_stream_different_offsets(device):
    """One seed, consecutive offsets (steps of one request): draws still follow p."""
    v = 10
    logits = torch.linspace(-1, 1, v)
    n = 5000
    tok = _sample(sample_tokens, logits.expand(n, v).contiguous().to(device), 1.0, 0.0,
                  42, torch.arange(n))
    ok, msg = _chi_square_ok(torch.bincount(tok.cpu(), minlength=v).double(),
                             _expected(logits, 1.0, 0.0), n)
    assert ok, msg


def test_min_p_excludes_low_probability_tokens(device):
    v = 64
    logits = torch.full((v,), -10.0)
    logits[:5] = torch.tensor([3.0, 2.9, 2.5, 0.5, 0.2])  # p/p_max: 1, .9, .6, .07, .06
    batch = logits.expand(2000, v).contiguous().to(device)
    tok = _sample(sample_tokens, batch, 1.0, 0.5, torch.arange(2000), 0)
    assert set(tok.tolist()) == {0, 1, 2}


def test_deterministic_and_layout_independent(device):
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(20, 1000, generator=gen).to(device)
    seeds = torch.randint(0, 2**62, (20,), generator=gen)
    offsets = torch.randint(0, 1000, (20,), generator=gen)
    temp = torch.rand(20, generator=gen) + 0.3
    a = _sample(sample_tokens, logits, temp, 0.05, seeds, offsets)
    b = _sample(sample_tokens, logits, temp, 0.05, seeds, offsets)
    assert torch.equal(a, b)
    perm = torch.randperm(20, generator=gen)
    c = _sample(sample_tokens, logits[perm.to(device)], temp[perm], 0.05, seeds[perm], offsets[perm])
    assert torch.equal(c, a[perm.to(device)]), "a row's token must not depend on its batch slot"
    d = _sample(sample_tokens, logits, temp, 0.05, seeds, offsets + 1)
    assert not torch.equal(d, a), "the offset must change the draw"
    r1 = _sample(sample_tokens_ref, logits[:3], temp[:3], 0.05, seeds[:3], offsets[:3])
    assert torch.equal(r1, _sample(sample_tokens_ref, logits[:3], temp[:3], 0.05, seeds[:3],
                                   offsets[:3]))


def test_vocab_chunking_does_not_change_draws(device, monkeypatch):
    """A small batch splits the vocab over several programs, a large one does not: the
    random stream of each token, hence each draw, must be the same."""
    import titaninfer.kernels.sampling as sampling

    monkeypatch.setattr(sampling, "device_sms", lambda dev: 4)  # 8 programs fill "the GPU"
    v = 9000
    assert sampling_layout(2, v, 4)[2] == 3 and sampling_layout(12, v, 4)[2] == 1
    gen = torch.Generator().manual_seed(11)
    logits = (torch.randn(12, v, generator=gen) * 2).to(device)
    seeds = torch.randint(0, 2**62, (12,), generator=gen)
    temp = torch.where(torch.arange(12) % 5 == 0, 0.0, 1.0)
    big = _sample(sample_tokens, logits, temp, 0.01, seeds, 5)
    small = _sample(sample_tokens, logits[:2], temp[:2], 0.01, seeds[:2], 5)
    assert torch.equal(big[:2], small)
    assert torch.equal(big[temp.to(device) == 0], logits.argmax(-1)[temp.to(device) == 0])


@gpu
@pytest.mark.gpu
def test_sampling_gpu_large_vocab():
    v = 128256
    logits = torch.randn(256, v, device="cuda") * 3
    tok = _sample(sample_tokens, logits, 0.0, 0.0, 0, 0)
    assert torch.equal(tok, logits.argmax(-1))
    # Distribution on a real-size vocab: 64 of 128K tokens carry the mass.
    row = torch.full((v,), -30.0)
    row[torch.randperm(v)[:64]] = torch.randn(64)
    n = 50000
    tok = _sample(sample_tokens, row.expand(n, v).contiguous().cuda(), 0.9, 0.01,
                  torch.randint(0, 2**62, (n,)), 3)
    ok, msg = _chi_square_ok(torch.bincount(tok.cpu(), minlength=v).double(),
                             _expected(row, 0.9, 0.01), n)
    assert ok, msg


def test_layout_has_few_variants_across_batch_sizes() -> None:
    """The layout's constexprs must take a handful of values as the batch changes from step
    to step (each new value is a ~1 s compile in the middle of a run)."""
    for vocab in (32000, 151936):
        layouts = {sampling_layout(b, vocab, 132) for b in range(1, 1025)}
        assert len(layouts) <= 11, layouts
