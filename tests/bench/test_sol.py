"""The speed-of-light arithmetic, checked against a hand computation for SmolLM2-135M's
shape, and the reconstructed schedules against counted steps."""

from __future__ import annotations

import pytest

from titaninfer.bench.sol import Chunk, ModelCost, simulate_schedule, speed_of_light, step_cost
from titaninfer.config import ModelConfig
from titaninfer.loader.dummy import DUMMY_SHAPES

# SmolLM2-135M: L=30 layers, H=576, I=1536, Hq=9, Hk=3, D=64, V=49152, fp32 (4 bytes).
#   per layer: qkv 576*(576+2*192) = 552,960; o 576*576 = 331,776; mlp 3*576*1536 = 2,654,208
#   P_layers = 30 * 3,538,944 = 106,168,320;  P_head = 49152*576 = 28,311,552
#   kv bytes/token = 2*30*192*4 = 46,080;     attention FLOPs/pair = 4*30*9*64 = 69,120
P_LAYERS, P_HEAD, KV_TOK, ATTN_PAIR = 106_168_320, 28_311_552, 46_080, 69_120
BW, COMPUTE = 10e9, 100e9  # bytes/s, FLOP/s


@pytest.fixture
def cost() -> ModelCost:
    return ModelCost.from_config(ModelConfig.from_hf(DUMMY_SHAPES["smollm2-135m"]), dtype_bytes=4)


def test_model_constants(cost: ModelCost) -> None:
    assert cost.layer_linear_params == P_LAYERS
    assert cost.head_params == P_HEAD
    assert cost.kv_bytes_per_token == KV_TOK
    assert cost.attn_flops_per_pair == ATTN_PAIR


def test_decode_step_by_hand(cost: ModelCost) -> None:
    # Two decodes with 100 and 300 tokens of context.
    #   bytes = (P_layers + P_head)*4 + kv_tok*(101 + 301) = 537,919,488 + 18,524,160 = 556,443,648
    #   FLOPs = 2*P_layers*2 + 2*P_head*2 + 69,120*((100+1) + (300+1))
    #         = 424,673,280 + 113,246,208 + 27,786,240 = 565,705,728
    sc = step_cost(cost, [Chunk(1, 100), Chunk(1, 300)])
    assert sc.bytes == 556_443_648
    assert sc.flops == 565_705_728


def test_prefill_step_by_hand(cost: ModelCost) -> None:
    # One 128-token prompt: pairs = 128*129/2 = 8,256
    #   bytes = 537,919,488 + 46,080*128 = 543,817,728
    #   FLOPs = 2*P_layers*128 + 2*P_head*1 + 69,120*8,256
    #         = 27,179,089,920 + 56,623,104 + 570,654,720 = 27,806,367,744
    sc = step_cost(cost, [Chunk(128, 0)])
    assert sc.bytes == 543_817_728
    assert sc.flops == 27_806_367_744


def test_unsampled_chunk_skips_lm_head(cost: ModelCost) -> None:
    # A non-final prefill chunk of 64: no LM head read or computed.
    #   bytes = P_layers*4 + 46,080*64 = 424,673,280 + 2,949,120 = 427,622,400
    #   FLOPs = 2*P_layers*64 + 69,120*(64*65/2) = 13,589,544,960 + 143,769,600 = 13,733,314,560
    sc = step_cost(cost, [Chunk(64, 0, sample=False)])
    assert sc.bytes == 427_622_400
    assert sc.flops == 13_733_314_560


def test_floor_is_max_per_step_summed(cost: ModelCost) -> None:
    # prefill: max(543,817,728/10e9 = 0.0543817728, 27,806,367,744/100e9 = 0.27806367744) -> compute
    # decode:  max(556,443,648/10e9 = 0.0556443648, 565,705,728/100e9 = 0.00565705728) -> bandwidth
    res = speed_of_light(cost, [[Chunk(128, 0)], [Chunk(1, 100), Chunk(1, 300)]], BW, COMPUTE, "test")
    assert res.speed_of_light_s == pytest.approx(0.27806367744 + 0.0556443648, rel=1e-12)
    assert res.num_steps == 2 and res.num_compute_bound_steps == 1
    assert res.total_bytes == 543_817_728 + 556_443_648


def test_sequential_schedule_decode_latency() -> None:
    steps = simulate_schedule([128], [256], max_num_batched_tokens=8192, max_num_seqs=256, sequential=True)
    assert len(steps) == 1 + 255  # one prefill samples token 1, then 255 decodes
    assert steps[0] == [Chunk(128, 0, True)]
    assert steps[1] == [Chunk(1, 128, True)] and steps[-1] == [Chunk(1, 128 + 254, True)]


def test_sequential_schedule_chunks_long_prompts() -> None:
    steps = simulate_schedule([100], [2], max_num_batched_tokens=64, max_num_seqs=1, sequential=True)
    assert steps == [[Chunk(64, 0, False)], [Chunk(36, 64, True)], [Chunk(1, 100, True)]]


def test_batched_schedule_decodes_first_then_prefill_chunks() -> None:
    steps = simulate_schedule([10, 20], [3, 1], max_num_batched_tokens=16, max_num_seqs=8)
    assert steps == [
        [Chunk(10, 0, True), Chunk(6, 0, False)],  # r0 whole prompt, r1 a chunk
        [Chunk(1, 10, True), Chunk(14, 6, True)],  # r0 decodes first; r1 finishes its prompt (and its 1 token)
        [Chunk(1, 11, True)],                      # r0's third token
    ]


def test_batched_schedule_respects_max_num_seqs() -> None:
    steps = simulate_schedule([4] * 3, [2] * 3, max_num_batched_tokens=100, max_num_seqs=2)
    assert max(len(s) for s in steps) <= 2
    assert sum(c.sample for s in steps for c in s) == 6  # every request got its 2 tokens
