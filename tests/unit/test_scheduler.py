"""Scheduler behaviour with a fake runner (no model): budgets, chunked prefill, decode
priority, preemption order, priorities with aging, abort, and a randomised simulation
checked against the scheduler's invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from titaninfer.config import SchedulerConfig
from titaninfer.kv import KVCacheManager
from titaninfer.kv.manager import blocks_needed
from titaninfer.scheduler import Request, RequestStatus, Scheduler
from titaninfer.types import FinishReason, RunnerOutput, SamplingParams, SchedulerOutput


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(num_blocks=64, block_size=4, max_seqs=8, budget=32, policy="fcfs", aging=1.0, clock=None,
         max_model_len=10_000):
    kv = KVCacheManager(num_blocks, block_size)
    cfg = SchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=budget, policy=policy, aging_per_s=aging)
    return Scheduler(cfg, kv, max_model_len=max_model_len, clock=clock or FakeClock())


def req(rid: str, prompt_len: int, max_tokens: int = 4, priority: int = 0, arrival: float = 0.0) -> Request:
    return Request(rid, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                   max_tokens=max_tokens, priority=priority, arrival_time=arrival)


def fake_run(out: SchedulerOutput) -> RunnerOutput:
    return RunnerOutput(sampled_token_ids={c.request_id: 7 for c in out.chunks if c.sample})


def step(s: Scheduler) -> SchedulerOutput:
    out = s.schedule()
    s.update(out, fake_run(out))
    return out


def test_budget_and_chunked_prefill():
    s = make(budget=10)
    s.add_request(req("a", 23))
    out = s.schedule()
    assert [(c.start_pos, len(c.token_ids), c.sample) for c in out.chunks] == [(0, 10, False)]
    s.update(out, fake_run(out))
    out = step(s)
    assert [(c.start_pos, len(c.token_ids), c.sample) for c in out.chunks] == [(10, 10, False)]
    out = step(s)
    assert [(c.start_pos, len(c.token_ids), c.sample) for c in out.chunks] == [(20, 3, True)]
    assert s.requests["a"].output_token_ids == [7]
    out = step(s)  # decode
    assert [(c.start_pos, c.token_ids) for c in out.chunks] == [(23, [7])]


def test_decodes_come_before_prefill_and_budget_holds():
    s = make(budget=6, max_seqs=8)
    s.add_request(req("a", 3, max_tokens=10))
    step(s)  # a prefilled, has 1 output
    s.add_request(req("b", 50))
    out = step(s)
    assert out.chunks[0].request_id == "a" and len(out.chunks[0].token_ids) == 1
    assert out.chunks[1].request_id == "b" and len(out.chunks[1].token_ids) == 5
    assert out.num_tokens <= 6


def test_max_num_seqs_respected():
    s = make(max_seqs=3, budget=100)
    for i in range(5):
        s.add_request(req(f"r{i}", 2))
    out = s.schedule()
    assert len(out.chunks) == 3 and len(s.waiting) == 2


def test_preemption_takes_newest_and_recomputes():
    # 6 blocks of 4 tokens. Three requests of 8-token prompts take 2 blocks each; when they
    # grow past 8 tokens each needs a third block and the newest must yield.
    s = make(num_blocks=6, block_size=4, budget=100)
    for i, rid in enumerate("abc"):
        s.add_request(req(rid, 8, max_tokens=6, arrival=float(i)))
    step(s)  # prefill all three: 9 tokens each known, 8 computed
    assert s.kv.num_free_blocks == 0
    step(s)  # each decode needs a third block -> c (newest) is preempted
    assert s.requests["c"].status is RequestStatus.PREEMPTED
    assert [r.request_id for r in s.running] == ["a", "b"]
    assert s.num_preemptions == 1
    out = s.schedule()
    assert "c" in out.dropped_request_ids  # the runner is told to forget c's state
    s.update(out, fake_run(out))
    # Run to completion: everyone finishes with exactly max_tokens tokens, blocks all free.
    for _ in range(200):
        if not s.has_unfinished():
            break
        step(s)
    assert not s.has_unfinished()
    assert s.kv.num_free_blocks == 6
    s.kv.check_invariants()


def test_preempted_request_resumes_with_its_outputs():
    s = make(num_blocks=4, block_size=4, budget=100)
    s.add_request(req("a", 6, max_tokens=8, arrival=0))
    s.add_request(req("b", 6, max_tokens=8, arrival=1))
    for _ in range(4):
        step(s)  # the 4th step takes both to 9 tokens: 3 blocks each, only 4 exist
    b = s.requests["b"]
    assert b.status is RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    outputs_before = list(b.output_token_ids)
    while s.requests.get("a"):
        step(s)
    out = s.schedule()  # b re-admitted: the runner gets prompt + its outputs again
    new = [n for n in out.new_requests if n.request_id == "b"][0]
    assert new.output_token_ids == outputs_before
    chunk = [c for c in out.chunks if c.request_id == "b"][0]
    assert chunk.start_pos == 0 and chunk.token_ids == b.prompt_token_ids + outputs_before


def test_priority_order_and_victim():
    clock = FakeClock()
    s = make(num_blocks=6, block_size=4, budget=100, policy="priority", aging=0.0, clock=clock)
    s.add_request(req("low", 8, max_tokens=6, priority=5, arrival=0))
    s.add_request(req("high", 8, max_tokens=6, priority=0, arrival=1))
    s.add_request(req("mid", 8, max_tokens=6, priority=2, arrival=2))
    out = s.schedule()
    assert [c.request_id for c in out.chunks] == ["high", "mid", "low"]
    s.update(out, fake_run(out))
    step(s)
    # out of blocks: the lowest priority (highest value) is preempted first, though oldest
    assert s.requests["low"].status is RequestStatus.PREEMPTED
    assert s.requests["high"].status is RequestStatus.RUNNING


def test_aging_prevents_starvation():
    def run(aging: float) -> int | None:
        clock = FakeClock()
        s = make(max_seqs=1, budget=100, policy="priority", aging=aging, clock=clock)
        s.add_request(req("low", 2, max_tokens=1, priority=10, arrival=0.0))
        for t in range(200):
            clock.t = float(t)
            s.add_request(req(f"hi{t}", 2, max_tokens=1, priority=0, arrival=clock.t))
            out = step(s)
            if any(c.request_id == "low" for c in out.chunks):
                return t
        return None

    assert run(aging=0.0) is None  # without aging a steady high-priority stream starves it
    served_at = run(aging=1.0)
    assert served_at is not None and served_at <= 12


def test_abort_frees_blocks_and_tells_runner():
    s = make()
    s.add_request(req("a", 10, max_tokens=50))
    step(s)
    assert s.kv.num_used_blocks > 0
    s.abort("a")
    assert s.kv.num_used_blocks == 0 and not s.has_unfinished()
    assert "a" in s.schedule().dropped_request_ids


def test_token_stop_rules():
    s = make()
    r = Request("a", [1, 2, 3], SamplingParams(max_tokens=10, stop_token_ids=[9]), max_tokens=10,
                eos_token_ids=frozenset({7}))
    s.add_request(r)
    out = s.schedule()
    s.update(out, RunnerOutput(sampled_token_ids={"a": 7}))  # EOS
    assert r.finish_reason is FinishReason.STOP and r.is_finished
    r2 = Request("b", [1], SamplingParams(max_tokens=10, min_tokens=2), max_tokens=10,
                 eos_token_ids=frozenset({7}))
    s.add_request(r2)
    out = s.schedule()
    s.update(out, RunnerOutput(sampled_token_ids={"b": 7}))  # below min_tokens: ignored
    assert not r2.is_finished
    out = s.schedule()
    s.update(out, RunnerOutput(sampled_token_ids={"b": 9}))  # not a stop id -> continues
    assert not r2.is_finished and r2.output_token_ids == [7, 9]
    out = s.schedule()
    s.update(out, RunnerOutput(sampled_token_ids={"b": 7}))
    assert r2.finish_reason is FinishReason.STOP


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 12), st.integers(0, 3)), min_size=1, max_size=12),
    num_blocks=st.integers(12, 40),
    block_size=st.sampled_from([1, 2, 4, 8]),
    budget=st.integers(1, 48),
    max_seqs=st.integers(1, 6),
    policy=st.sampled_from(["fcfs", "priority"]),
)
def test_random_workloads_finish_and_respect_invariants(prompts, num_blocks, block_size, budget, max_seqs, policy):
    s = make(num_blocks=num_blocks, block_size=block_size, budget=budget, max_seqs=max_seqs, policy=policy)
    expected: dict[str, int] = {}
    for i, (plen, mt, prio) in enumerate(prompts):
        r = req(f"r{i}", plen, max_tokens=mt, priority=prio, arrival=float(i))
        if not s.kv.can_fit(plen + mt):
            continue
        s.add_request(r)
        expected[r.request_id] = mt
    finished: dict[str, Request] = {r: s.requests[r] for r in expected}
    for _ in range(5000):
        if not s.has_unfinished():
            break
        out = s.schedule()
        assert out.num_tokens <= budget
        assert len(s.running) <= max_seqs
        assert len({c.request_id for c in out.chunks}) == len(out.chunks)
        s.update(out, fake_run(out))
        s.kv.check_invariants()
        for r in s.running:
            assert len(s.kv.block_ids(r.request_id)) == blocks_needed(r.num_computed_tokens, block_size)
    assert not s.has_unfinished(), "scheduler stopped making progress"
    for rid, mt in expected.items():
        assert len(finished[rid].output_token_ids) == mt
        assert finished[rid].finish_reason is FinishReason.LENGTH
    assert s.kv.num_free_blocks == num_blocks
