"""greedy_argmax vs torch.argmax: the first index of the maximum, ties across and within
chunks, rows of -inf, a vocabulary that is not a multiple of the chunk, repeated calls
(the row counters must be back at zero)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.argmax import greedy_argmax  # noqa: E402

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("vocab,chunk", [(1000, 128), (129, 64), (64, 64), (37, 1024)])
def test_greedy_argmax_matches_torch(vocab, chunk, device):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(5, vocab, generator=gen)
    top = logits.max() + 1
    logits[1, [vocab - 1, vocab // 2, 3]] = top  # a tie across chunks: the first wins
    logits[2, [4, 5]] = top  # a tie inside one chunk
    logits[3] = float("-inf")  # nothing finite: index 0, as torch
    logits = logits.to(device)
    expected = logits.argmax(-1)
    for _ in range(2):  # the second call checks the counters were reset
        assert torch.equal(greedy_argmax(logits, chunk), expected)
    strided = torch.randn(3, vocab * 2, generator=gen).to(device)[:, :vocab]
    assert torch.equal(greedy_argmax(strided, chunk), strided.argmax(-1))
    buf = torch.full((8,), -7, dtype=torch.int64, device=device)  # into a given buffer's first rows
    assert greedy_argmax(logits, chunk, out=buf[:5]).data_ptr() == buf.data_ptr()
    assert torch.equal(buf[:5], expected) and bool((buf[5:] == -7).all())


def test_greedy_argmax_rejects_bad_input(device):
    with pytest.raises(ValueError, match="2-D"):
        greedy_argmax(torch.zeros(4, device=device))
    with pytest.raises(ValueError, match="power of two"):
        greedy_argmax(torch.zeros(2, 8, device=device), chunk=6)
    assert greedy_argmax(torch.zeros(0, 8, device=device)).shape == (0,)
    with pytest.raises(ValueError, match="int64"):
        greedy_argmax(torch.zeros(2, 8, device=device), out=torch.zeros(2, dtype=torch.int32, device=device))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("rows,vocab", [(1, 128256), (1, 32000), (16, 151936), (256, 32000)])
def test_greedy_argmax_model_vocabularies_gpu(rows, vocab):
    logits = torch.randn(rows, vocab, device="cuda") * 5
    assert torch.equal(greedy_argmax(logits), logits.argmax(-1))
