"""benchmarks/critical_path.py on a synthetic PDL trace whose critical path is known."""

from __future__ import annotations

import json

from benchmarks import critical_path


def _trace(n_steps: int, layers: int) -> dict:
    """Steps of: embed, layers x (gemv, attn, gemv), final gemv, argmax. Every kernel starts
    1 us after the one before (PDL: early) and ends `cost` us after the previous end."""
    cost = {"_embedding_sumsq_kernel": 3.0, "_skinny_gemm_kernel": 2.0, "_decode_split_kernel": 5.0,
            "_argmax_kernel": 4.0}
    events, t = [], 0.0
    for _ in range(n_steps):
        seq = ["_embedding_sumsq_kernel"] + ["_skinny_gemm_kernel", "_decode_split_kernel",
                                             "_skinny_gemm_kernel"] * layers
        seq += ["_skinny_gemm_kernel", "_argmax_kernel"]
        start, end = t, t
        for name in seq:
            end = end + cost[name]
            events.append({"ph": "X", "cat": "kernel", "name": name, "ts": start, "dur": end - start})
            start += 1.0
        t = end + 50.0
    events.append({"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0.0, "dur": 1.0})
    return {"traceEvents": events}


def test_steps_and_labels_from_a_synthetic_trace(tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(_trace(n_steps=3, layers=4)))
    steps = critical_path.split_steps(critical_path.kernel_events(json.loads(path.read_text())))
    assert len(steps) == 3 and all(len(s) == 1 + 3 * 4 + 2 for s in steps)
    labels = critical_path.layer_labels([n for _, _, n in steps[0]], first_layer_at=1)
    assert labels[:4] == ["pre embed", "layer[0] gemv", "layer[1] attn", "layer[2] gemv"]
    assert labels[-2:] == ["post gemv", "post argmax"]
    monkeypatch.setattr("sys.argv", ["critical_path", str(path)])
    critical_path.main()
    out = capsys.readouterr().out
    rows = {line.split()[0] + " " + line.split()[1]: line.split() for line in out.splitlines()
            if line.startswith(("layer[", "post "))}
    assert float(rows["layer[1] attn"][3]) == 5.0 and float(rows["layer[1] attn"][4]) == 20.0
    assert float(rows["post argmax"][3]) == 4.0
    total = float(out.splitlines()[-1].split()[-1])
    assert total == 4 * (2 + 5 + 2) + 2 + 4  # the step's span minus the embedding's own time


def test_kernel_trace_rows_from_known_stamps() -> None:
    """benchmarks/kernel_trace.py's per-launch timings from hand-made stamps: the release is
    the first program past its wait, the end the last end stamp, and a merge stamp left by
    an earlier replay (older than this release) is ignored."""
    import numpy as np

    from benchmarks import kernel_trace
    records = [("gemv", 0, 2, 3), ("attn", 6, 2, 5)]
    stamps = np.array([0, 100, 500, 50, 120, 700,  # gemv: start, waited, end per program
                       10, 700, 1500, 1800, 5,  # attn program 0: an old merge stamp (5)
                       705, 710, 1600, 1900, 2500], dtype=np.int64)  # program 1: late, merged
    gemv, attn = kernel_trace.kernel_rows(records, stamps)
    assert (gemv["released"], gemv["end"], gemv["early"]) == (100, 700, 1.0)
    assert (attn["released"], attn["end"]) == (700, 2500)
    assert (attn["compute"], attn["ticket"], attn["merge"]) == (1600 - 700, 1900 - 1600, 2500 - 1900)
    assert attn["early"] == 0.5 and attn["lead"] == 700 - np.median([10, 705])
    assert critical_path.layer_labels(["gemv", "attn", "gemv"] * 2 + ["gemv"], first_layer_at=0) == [
        "layer[0] gemv", "layer[1] attn", "layer[2] gemv"] * 2 + ["post gemv"]
