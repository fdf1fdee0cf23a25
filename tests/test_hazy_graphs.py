"""CUDA-graph decode of the hazyresearch families (Based, JRT-RNN, attention baseline), on CPU.

``cuda_graphs="static"`` runs exactly what a captured graph replays — the step over the graph's full-batch static
buffers, finished rows still stepped, full attention over the whole preallocated KV buffer with a device-side
write column — without the capture itself, so the bookkeeping can be checked here against the eager decode
(``cuda_graphs=False``). What only a real capture can show (host syncs on CUDA tensors) is checked by listing the
ops the step dispatches: none of them may read the device.
"""
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from jrt_eval.model_adapters.base import cast_matmul_weights, greedy_generate, left_pad
from jrt_eval.model_adapters.hazy_gpt import HazyCache, load_model, write_tiny_checkpoint

FAMILIES = ["based", "jrt_rnn", "attn"]
ATOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("hazy_graphs")
    return {fam: write_tiny_checkpoint(root / fam, fam, seed=0) for fam in FAMILIES}


@pytest.fixture(scope="module")
def eager(tiny):
    return {fam: load_model(str(path), cuda_graphs=False) for fam, path in tiny.items()}


@pytest.fixture()
def static(tiny):
    """Fresh per test: graph caches start empty."""
    return {fam: load_model(str(path), cuda_graphs="static") for fam, path in tiny.items()}


class Recorder:
    """Wraps a model for greedy_generate and keeps every logits tensor it hands out (prefill, then each step)."""

    def __init__(self, model):
        self.model, self.logits, self.caches = model, [], []

    def prefill(self, *args, **kwargs):
        logits, cache = self.model.prefill(*args, **kwargs)
        self.logits.append(logits.clone())
        self.caches.append(cache)
        return logits, cache

    def step(self, ids, cache):
        logits = self.model.step(ids, cache)
        self.logits.append(logits.clone())
        return logits


def generate(model, ids, mask, new, is_done=None):
    rec = Recorder(model)
    with torch.no_grad():
        out = greedy_generate(rec, ids, mask, new, is_done, vocab_limit=50257)
    return out, rec


def close(x, y, exact=False):
    """Bit-identical, or within 1e-6 of the logits' scale: float32 rounding only. The static step computes every
    row of the full batch (CPU GEMMs round differently for 5 rows than for the 3 live ones), and full attention
    attends over the whole KV buffer, unfilled columns masked (another GEMM length than eager's filled columns)."""
    assert x.shape == y.shape
    if exact:
        assert torch.equal(x, y), (x - y).abs().max()
    else:
        diff, scale = (x - y).abs().max().item(), max(1.0, y.abs().max().item())
        assert diff <= ATOL * scale, (diff, scale)


def assert_same_decode(a, b, exact=False):
    (out_a, rec_a), (out_b, rec_b) = a, b
    assert out_a.tokens == out_b.tokens and out_a.steps == out_b.steps
    assert len(rec_a.logits) == len(rec_b.logits)
    for x, y in zip(rec_a.logits, rec_b.logits):
        close(x, y, exact)


def prompts(seed, lengths):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 50257, (n,), generator=g).tolist() for n in lengths]


def stop_after(lengths_by_prefix):
    """is_done: row r stops after lengths_by_prefix[its first token] tokens (rows leave at different steps)."""
    return lambda toks: len(toks) >= lengths_by_prefix.get(toks[0], 10 ** 9)


# ----------------------------------------------------------------------------------- generations = eager
@pytest.mark.parametrize("family", FAMILIES)
def test_static_generate_equals_eager_with_padding_and_rows_leaving(eager, static, family):
    seqs = prompts(1, (5, 16, 23, 2, 17))  # mixed lengths around the JRT encoder length 16: left padding
    ids, mask = left_pad(seqs, 50256)
    ref = generate(eager[family], ids, mask, 12)
    # no row leaves: the same ops on the same rows (full attention: over more, masked, columns)
    assert_same_decode(generate(static[family], ids, mask, 12), ref, exact=family != "attn")
    firsts = [row[0] for row in ref[0].tokens]
    assert len(set(firsts)) == len(firsts), "test needs distinct first tokens"
    is_done = stop_after({firsts[0]: 3, firsts[2]: 7, firsts[3]: 1})  # row 3 leaves before any step
    want = generate(eager[family], ids, mask, 12, is_done)
    got = generate(static[family], ids, mask, 12, is_done)
    assert_same_decode(got, want)
    assert [len(t) for t in got[0].tokens] == [3, 12, 7, 1, 12]
    cache = got[1].caches[0]
    # row 3 left before the first step (the graph was built for the 4 others); rows 0 and 2 left it later: the
    # static buffers keep all 4 rows and ``rows`` lists the live ones (batch rows 1 and 4)
    assert cache._runner is not None and cache.rows.tolist() == [1, 3]
    assert next(iter(cache.layers[0].values())).shape[0] == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_second_generate_reuses_the_graph(eager, static, family):
    m = static[family]
    first = prompts(2, (9, 30, 4, 12))
    second = prompts(3, (11, 7, 20, 3))  # another batch of 4, other widths
    for seqs in (first, second, first):
        ids, mask = left_pad(seqs, 50256)
        assert_same_decode(generate(m, ids, mask, 8), generate(eager[family], ids, mask, 8))
    if family == "attn":  # full attention: keyed by KV capacity (both widths + 7 steps fit in 128 columns)
        assert {key[1] for key in m._graphs} == {128}
    else:  # Based / JRT-RNN states do not depend on the prompt
        assert {key[1] for key in m._graphs} == {0}
    assert len(m._graphs) == 1
    graph = next(iter(m._graphs.values()))
    ids, mask = left_pad(first, 50256)
    generate(m, ids, mask, 8)
    assert next(iter(m._graphs.values())) is graph  # replayed, not rebuilt
    # another batch size: another graph; a batch of one without a mask too
    for seqs in (first[:2], first[:1]):
        ids, mask = left_pad(seqs, 50256)
        assert_same_decode(generate(m, ids, mask, 6), generate(eager[family], ids, mask, 6))
    assert [key[0] for key in m._graphs] == ([2, 1] if family == "attn" else [4, 2, 1])  # MAX_KV_GRAPHS = 2


def test_interleaved_caches_hand_the_buffers_over(eager, static):
    """Two caches of one batch size step in turn through one graph: each gets its state back."""
    for family in FAMILIES:
        m, ref = static[family], eager[family]
        a, b = prompts(4, (6, 6, 6)), prompts(5, (9, 2, 9))
        ids_a, ids_b = torch.tensor(a), left_pad(b, 0)
        with torch.no_grad():
            _, ca = m.prefill(ids_a)
            _, rca = ref.prefill(ids_a)
            _, cb = m.prefill(*ids_b)
            _, rcb = ref.prefill(*ids_b)
            toks = [torch.tensor(t) for t in prompts(6, (3,) * 6)]
            for t, (c, rc) in zip(toks, [(ca, rca), (cb, rcb), (ca, rca), (ca, rca), (cb, rcb), (cb, rcb)]):
                if c is ca and t is toks[3]:
                    c.select(torch.tensor([2, 0]))
                    rc.select(torch.tensor([2, 0]))
                n = c.batch_size
                close(m.step(t[:n], c), ref.step(t[:n], rc))
        assert len(m._graphs) == 1


# ----------------------------------------------------------------------------------- full attention KV room
def test_attn_kv_capacity_is_reserved_once_and_regrown_when_exceeded(eager, static):
    m, ref = static["attn"], eager["attn"]
    seqs = prompts(7, (40, 3, 25))
    ids, mask = left_pad(seqs, 50256)
    out, rec = generate(m, ids, mask, 100)
    assert_same_decode((out, rec), generate(ref, ids, mask, 100))
    cache = rec.caches[0]
    assert cache.filled == 40 + 99 and cache.target == 40 + 99
    assert cache.capacity == 256 and [k[1] for k in m._graphs] == [256]  # one graph, one capacity
    # no reserve (a plain step loop): the buffers get a bucket of room, then a larger graph when it runs out
    m.release_graphs()
    with torch.no_grad():
        _, c = m.prefill(ids, mask)
        _, rc = ref.prefill(ids, mask)
        nxt = torch.tensor([1, 2, 3])
        for t in range(130):
            close(m.step(nxt, c), ref.step(nxt, rc))
            if t == 0:
                assert c.capacity == 128 and c._runner is not None
            nxt = (nxt * 7 + t) % 50257
    assert c.filled == 170 and c.capacity == 256 and rc.capacity == 256
    assert [k[1] for k in m._graphs] == [128, 256]
    # a graph with a little more room than wanted (a quarter, at least one bucket) is replayed rather than
    # another captured: 120 + 79 columns -> 256; then 60 + 59 -> 128 wanted, the 256 graph serves
    m.release_graphs()
    ids, mask = left_pad(prompts(8, (120, 50, 60)), 50256)
    assert_same_decode(generate(m, ids, mask, 80), generate(ref, ids, mask, 80))
    (graph256,) = m._graphs.values()
    ids, mask = left_pad(prompts(8, (60, 20, 10)), 50256)
    out = generate(m, ids, mask, 60)
    assert_same_decode(out, generate(ref, ids, mask, 60))
    assert list(m._graphs.values()) == [graph256] and out[1].caches[0].capacity == 256
    ids, mask = left_pad(prompts(8, (300, 20, 10)), 50256)  # 300 + 3 -> 384: not within a quarter of 256
    assert_same_decode(generate(m, ids, mask, 4), generate(ref, ids, mask, 4))
    assert [k[1] for k in m._graphs] == [256, 384]  # most recently used last


def test_attn_kv_graphs_are_capped(eager, static):
    m = static["attn"]
    m.MAX_KV_GRAPHS = 2
    for width in (10, 140, 300):  # capacities 128, 256, 384: the oldest goes
        ids = torch.tensor(prompts(9, (width, width)))
        assert_same_decode(generate(m, ids, None, 4), generate(eager["attn"], ids, None, 4))
    assert sorted(k[1] for k in m._graphs) == [256, 384]


# ----------------------------------------------------------------------------------- autocast, quirks, positions
def test_graph_key_holds_the_autocast_state(eager, static):
    """A graph built under bf16 autocast is never replayed without it (and vice versa); results match eager
    decode under the same autocast state (Based: bit-identical; full attention: bf16 rounding of attending over
    more, masked, columns)."""
    for family in ("based", "attn"):
        m, ref = static[family], eager[family]

        def bf16_close(x, y):
            if family == "based":
                close(x, y, exact=True)
            else:
                assert (x - y).abs().max() <= 1e-2 * y.abs().max()

        ids = torch.tensor(prompts(10, (12, 12)))
        tok = torch.tensor([5, 6])
        with torch.no_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _, c = m.prefill(ids)
                _, rc = ref.prefill(ids)
                bf16_close(m.step(tok, c), ref.step(tok, rc))
            bound = c._runner
            assert bound.autocast == (True, torch.bfloat16)
            bf16_close(m.step(tok, c), ref.step(tok, rc))  # fp32 now (on states with bf16 rounding in them)
            assert c._runner is not bound and c._runner.autocast == (False, None)
            assert len(m._graphs) == 2
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16_close(m.step(tok, c), ref.step(tok, rc))
            assert c._runner is bound and len(m._graphs) == 2  # the bf16 graph again


def test_autocast_generate_with_precast_weights(tiny):
    """amp_bf16 as lm.py runs it (bf16 Linear weights, bf16 autocast): static = eager."""
    outs = []
    for mode in (False, "static"):
        m = load_model(str(tiny["jrt_rnn"]), cuda_graphs=mode)
        cast_matmul_weights(m, torch.bfloat16)
        ids, mask = left_pad(prompts(11, (7, 19, 3)), 50256)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(generate(m, ids, mask, 10))
    assert_same_decode(*outs, exact=True)


@pytest.mark.parametrize("family", ["based", "jrt_rnn"])
def test_reference_quirks_double_add_static(tiny, family):
    ids, mask = left_pad(prompts(12, (8, 14, 5)), 220)
    outs = [generate(load_model(str(tiny[family]), reference_quirks=True, cuda_graphs=mode), ids, mask, 10)
            for mode in (False, "static")]
    assert_same_decode(*outs)
    plain = generate(load_model(str(tiny[family]), cuda_graphs="static"), ids, mask, 10)
    if family == "based":  # the quirk reaches the graphed step
        assert any((a - b).abs().max() > 1e-3 for a, b in zip(outs[1][1].logits[1:], plain[1].logits[1:]))


def test_learned_positions_are_checked_on_the_host(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "pos", "based", seed=2, n_positions=24)
    ref, m = load_model(str(path), cuda_graphs=False), load_model(str(path), cuda_graphs="static")
    seqs = prompts(13, (20, 6))
    ids, mask = left_pad(seqs, 50256)
    first = generate(ref, ids, mask, 3)[0].tokens[0][0]
    # row 0 (20 tokens) stops after 3 tokens, at position 22; row 1 goes on to position 6 + 15 = 21 < 24. In the
    # graph row 0 is still stepped past the 24 learned positions: clamped, harmless
    is_done = stop_after({first: 3})
    assert_same_decode(generate(m, ids, mask, 16, is_done), generate(ref, ids, mask, 16, is_done))
    with torch.no_grad():
        for model in (ref, m):
            _, cache = model.prefill(ids, mask)
            assert cache.max_position == 20
            for _ in range(4):  # positions 20..23 of row 0
                model.step(torch.tensor([1, 2]), cache)
            with pytest.raises(ValueError, match="exceeds the checkpoint's 24 learned positions"):
                model.step(torch.tensor([1, 2]), cache)
            cache.select(torch.tensor([1]))  # the long row leaves: the bound is recomputed, decoding goes on
            model.step(torch.tensor([1]), cache)
            assert cache.max_position == 11


# ----------------------------------------------------------------------------------- capture safety, plumbing
# ops that read a CUDA tensor back on the host (item / int() / bool(), boolean indexing, data-dependent sizes),
# and lift_fresh: a tensor made from Python data inside the step (a pageable host-to-device copy on CUDA)
SYNCING = {"_local_scalar_dense", "item", "nonzero", "nonzero_static", "masked_select", "is_nonzero", "unique",
           "_unique2", "unique_consecutive", "equal", "allclose", "_assert_async", "tolist", "lift_fresh",
           "repeat_interleave", "bincount", "histc"}


class OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "index_put_" and any(i is not None and i.dtype == torch.bool for i in args[1]):
            name = "index_put_ (bool mask: nonzero)"
        self.ops.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family", FAMILIES)
def test_graphed_step_reads_nothing_back_from_the_device(static, family):
    """The ops of the static step (what a capture records) include none that synchronises with the host."""
    m = static[family]
    ids, mask = left_pad(prompts(14, (5, 9)), 50256)
    with torch.no_grad():
        _, cache = m.prefill(ids, mask)
        cache.reserve(4)
        m.step(torch.tensor([3, 4]), cache)  # binds (copies, allowed)
        graph = cache._runner
        log = OpLog()
        with torch.inference_mode(), log:
            graph.logits = graph._call()  # exactly what torch.cuda.graph records
    bad = sorted({op for op in log.ops if op in SYNCING or "nonzero" in op})
    assert not bad, bad
    assert len(log.ops) > 50


def test_cuda_graphs_option_reaches_the_model(tiny):
    from jrt_eval.model_adapters.lm import JRTLM

    cls = type("TestBased", (JRTLM,), {"FAMILY": "based"})
    static_lm = cls(pretrained=str(tiny["based"]), device="cpu", batch_size=3, cuda_graphs="static")
    eager_lm = cls(pretrained=str(tiny["based"]), device="cpu", batch_size=3, cuda_graphs="false")
    assert static_lm.model.cuda_graphs == "static" and eager_lm.model.cuda_graphs is False
    # default: graphs (checked against eager on an H100, hazy_gpt.load_model); on CPU tensors the step is eager
    assert cls(pretrained=str(tiny["based"]), device="cpu").model.cuda_graphs is True
    assert cls(pretrained=str(tiny["based"]), device="cpu", cuda_graphs="true").model.cuda_graphs is True
    from lm_eval.api.instance import Instance

    reqs = [Instance("generate_until", {}, (p, {"until": ["\n"], "max_gen_toks": 8}), i)
            for i, p in enumerate(["The capital of France is", "x", "Just read twice: a b c a b"])]
    assert static_lm.generate_until(reqs, disable_tqdm=True) == eager_lm.generate_until(reqs, disable_tqdm=True)
    assert static_lm.model._graphs
    with pytest.raises(ValueError, match="cuda_graphs"):
        load_model(str(tiny["based"]), cuda_graphs="sometimes")


def test_deepcopy_and_recast_drop_graphs(static):
    m = static["based"]
    ids = torch.tensor(prompts(15, (6, 6)))
    generate(m, ids, None, 4)
    assert m._graphs
    twin = copy.deepcopy(m)
    assert not twin._graphs and m._graphs
    assert_same_decode(generate(twin, ids, None, 4), generate(m, ids, None, 4))
    cast_matmul_weights(m, torch.bfloat16)  # graphs would read the old fp32 weights
    assert not m._graphs


def test_cache_type_and_select_contract(static):
    m = static["attn"]
    ids, mask = left_pad(prompts(16, (4, 8, 2)), 50256)
    with torch.no_grad():
        _, cache = m.prefill(ids, mask)
    assert isinstance(cache, HazyCache) and cache.filled == 8 and cache.capacity == 8
    assert cache.positions.tolist() == [4, 8, 2]
    assert cache.select(torch.tensor([2, 0])) is cache and cache.positions.tolist() == [2, 4]


@pytest.mark.parametrize("family", ["based", "attn", "mamba"])
def test_failed_capture_falls_back_to_eager(tiny, eager, family, tmp_path, caplog):
    """A capture that fails (here: no CUDA device behind torch.cuda.Stream) must not lose the evaluation: the
    model warns once, turns graphs off and decodes eagerly, with the eager results."""
    if family == "mamba":
        from jrt_eval.model_adapters import mamba

        model = mamba.load_model(str(mamba.write_tiny_checkpoint(tmp_path / "m", seed=0)), cuda_graphs=True)
        reference = mamba.load_model(str(tmp_path / "m"), cuda_graphs=False)
    else:
        model, reference = load_model(str(tiny[family]), cuda_graphs=True), eager[family]
    model._graphable = lambda ids: bool(model.cuda_graphs)  # as if the ids were on a GPU
    ids, mask = left_pad([[5, 6, 7, 8, 9], [11, 12]], 0)
    with caplog.at_level("WARNING", logger="jrt_eval"):
        got = greedy_generate(model, ids, mask, 6).tokens
    assert model.cuda_graphs is False and not model._graphs
    assert "CUDA-graph capture" in caplog.text and "decoding eagerly" in caplog.text
    assert got == greedy_generate(reference, ids, mask, 6).tokens
