"""GLA adapter (model_adapters/gla.py): fla-format loading (split and older fused MLP weights), our PyTorch model
vs a literal recurrent reading of the checkpoint (scale K^-1/2, gate normaliser 16, gated RMSNorm), recurrent
decode, padding invariance; fla's own naive recurrence as an extra check when fla imports.

reference-models.md §10 items 8, 9, 11, 12 for GLA. CPU, fp32. No GLA tokenizer (Llama-2, 32000) exists offline,
so the tiny checkpoints use GPT-2's vocabulary (50257) and tokenizer files; the 32000 layout is checked by shape.
"""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from jrt_eval.kernels.mamba import reference as R
from jrt_eval.kernels.mamba import scan as S
from jrt_eval.model_adapters import families, gla, mamba, mamba2
from jrt_eval.model_adapters.base import greedy_generate, left_pad
from jrt_eval.model_adapters.hub import CheckpointError

VOCAB = 50257


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return gla.write_tiny_checkpoint(tmp_path_factory.mktemp("gla") / "split", seed=0)


@pytest.fixture(scope="module")
def fused_ckpt(tmp_path_factory):
    return gla.write_tiny_checkpoint(tmp_path_factory.mktemp("gla") / "fused", seed=0, mlp="fused")


@pytest.fixture(scope="module")
def model(ckpt):
    return gla.load_model(str(ckpt))


def ids_of(seed, b, t, vocab=VOCAB):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def gla_oracle(folder, ids):
    """fla GLA semantics from the raw safetensors keys, one token at a time, float64: RMSNorm eps from norm_eps,
    gk = logsigmoid(gk_proj(h)) / 16, o_t = (q_t K^-1/2)ᵀ S_t, gated RMSNorm per head, swiglu MLP (a fused
    gate_proj is split here, first half gate)."""
    cfg = json.loads((folder / "config.json").read_text())
    sd = {k: v.double() for k, v in load_file(str(folder / "model.safetensors")).items()}
    eps, H = cfg["norm_eps"], cfg["num_heads"]
    Hkv = cfg.get("num_kv_heads") or H

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w

    r = sd["model.embeddings.weight"][ids]
    b, T = ids.shape
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(r, sd[p + "attn_norm.weight"])
        q = (h @ sd[p + "attn.q_proj.weight"].T).reshape(b, T, H, -1)
        k = (h @ sd[p + "attn.k_proj.weight"].T).reshape(b, T, Hkv, -1)
        v = (h @ sd[p + "attn.v_proj.weight"].T).reshape(b, T, Hkv, -1)
        gk = F.logsigmoid(h @ sd[p + "attn.gk_proj.0.weight"].T @ sd[p + "attn.gk_proj.1.weight"].T
                          + sd[p + "attn.gk_proj.1.bias"]).reshape(b, T, Hkv, -1) / 16
        if cfg.get("clamp_min") is not None:
            gk = gk.clamp_min(cfg["clamp_min"])
        k, v, gk = (t.repeat_interleave(H // Hkv, dim=2) for t in (k, v, gk))
        o, _ = R.gla_recurrent_ref(q, k, v, gk)  # scale defaults to K^-1/2
        w = sd[p + "attn.g_norm_swish_gate.weight"]
        if p + "attn.g_proj.weight" in sd:
            g = (h @ sd[p + "attn.g_proj.weight"].T).reshape(b, T, H, -1)
            o = R.gated_rms_norm_ref(o, g, w, eps).reshape(b, T, -1)
        else:  # use_output_gate off: fla's plain per-head RMSNorm (g_norm), no gate
            o = (o / torch.sqrt((o * o).mean(-1, keepdim=True) + eps) * w).reshape(b, T, -1)
        r = r + o @ sd[p + "attn.o_proj.weight"].T
        x = rms(r, sd[p + "mlp_norm.weight"])
        gate_w = sd[p + "mlp.gate_proj.weight"]
        up_w = sd.get(p + "mlp.up_proj.weight")
        if up_w is None:
            gate_w, up_w = gate_w.chunk(2, dim=0)
        r = r + (F.silu(x @ gate_w.T) * (x @ up_w.T)) @ sd[p + "mlp.down_proj.weight"].T
    return rms(r, sd["model.norm.weight"]) @ sd["lm_head.weight"].T


# ------------------------------------------------------------------------------------------ loading
def test_round_trip(ckpt, model):
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "gla" and gla.detect(cfg) and not mamba.detect(cfg) and not mamba2.detect(cfg)
    assert families.detect_family(cfg) == "gla"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer_config.json").is_file()
    assert model.family == "gla" and model.vocab_rows == VOCAB and model.max_length == 2048 and model.config == cfg
    s = model.spec
    assert (s.key_dim, s.value_dim, s.head_k, s.head_v, s.intermediate_size, s.gate_low_rank_dim) == (32, 64, 16, 32, 256, 16)
    raw = load_file(str(ckpt / "model.safetensors"))
    assert "model.layers.0.mlp.up_proj.weight" in raw
    for k, v in raw.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_fused_mlp_layout_loads_to_the_same_model(fused_ckpt, model):
    raw = load_file(str(fused_ckpt / "model.safetensors"))
    assert "model.layers.0.mlp.up_proj.weight" not in raw and raw["model.layers.0.mlp.gate_proj.weight"].shape == (512, 64)
    m = gla.load_model(str(fused_ckpt))
    ids = ids_of(1, 2, 9)
    torch.testing.assert_close(m(ids), model(ids), rtol=0, atol=0)


def test_unfused_norm_name_loads(tmp_path, ckpt, model):
    """fla with fuse_norm=False names the per-head norm ``attn.g_norm``."""
    raw = load_file(str(ckpt / "model.safetensors"))
    raw = {k.replace("g_norm_swish_gate", "g_norm"): v for k, v in raw.items()}
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["fuse_norm"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(raw, str(tmp_path / "model.safetensors"))
    ids = ids_of(2, 1, 7)
    torch.testing.assert_close(gla.load_model(str(tmp_path))(ids), model(ids), rtol=0, atol=0)


def test_real_13b_layout():
    cfg = gla.tiny_config(hidden_size=2048, num_hidden_layers=24, num_heads=4, vocab_size=32000)
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)
    spec = gla.parse_config(cfg)
    with torch.device("meta"):
        m = gla.GLALM(spec)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    p = "model.layers.0."
    assert shapes[p + "attn.q_proj.weight"] == (1024, 2048) and shapes[p + "attn.v_proj.weight"] == (2048, 2048)
    assert shapes[p + "attn.gk_proj.0.weight"] == (16, 2048) and shapes[p + "attn.gk_proj.1.weight"] == (1024, 16)
    assert shapes[p + "attn.g_norm_swish_gate.weight"] == (512,) and shapes[p + "mlp.gate_proj.weight"] == (5632, 2048)
    assert shapes["lm_head.weight"] == (32000, 2048) and shapes["model.embeddings.weight"] == (32000, 2048)
    n = sum(v.numel() for k, v in m.state_dict().items())
    assert abs(n - 1.365e9) < 1e6  # the hub page says 1.37B params


def _edit(tmp_path, src, name, config=None, weights=None):
    folder = tmp_path / name
    folder.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if config:
        config(cfg)
    raw = load_file(str(src / "model.safetensors"))
    if weights:
        weights(raw)
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file(raw, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("case, match", [
    ("missing", r"missing 1: model\.layers\.1\.attn\.gk_proj\.1\.bias"),
    ("unexpected", r"unexpected 1: model\.layers\.0\.attn\.rotary\.inv_freq"),
    ("shape", r"model\.layers\.0\.attn\.q_proj\.weight \(32, 64\) \(expected \(64, 64\)\)"),
    ("mlp_width", r"mlp\.down_proj\.weight \(64, 256\) \(expected \(64, 512\)\)"),
    ("fused_rows", r"fused gate/up weight must have 2 × 256 rows"),
    ("short_conv", r"use_short_conv=True is not supported"),
    ("feature_map", r"feature_map='relu' is not supported"),
    ("hybrid", r"attn=.* is not supported"),
    ("heads", r"3 heads / 3 kv heads do not divide"),
    ("not_gla", r"not a GLA config"),
    ("act", r"hidden_act 'gelu'"),
])
def test_named_errors(tmp_path, ckpt, fused_ckpt, case, match):
    src = fused_ckpt if case == "fused_rows" else ckpt
    edits = {
        "missing": dict(weights=lambda sd: sd.pop("model.layers.1.attn.gk_proj.1.bias")),
        "unexpected": dict(weights=lambda sd: sd.update({"model.layers.0.attn.rotary.inv_freq": torch.zeros(4)})),
        "shape": dict(config=lambda c: c.update(expand_k=1.0)),
        "mlp_width": dict(config=lambda c: c.update(intermediate_size=512)),
        "fused_rows": dict(weights=lambda sd: sd.update({"model.layers.0.mlp.gate_proj.weight": torch.zeros(100, 64)})),
        "short_conv": dict(config=lambda c: c.update(use_short_conv=True)),
        "feature_map": dict(config=lambda c: c.update(feature_map="relu")),
        "hybrid": dict(config=lambda c: c.update(attn={"layers": [1], "num_heads": 2})),
        "heads": dict(config=lambda c: c.update(num_heads=3)),
        "not_gla": dict(config=lambda c: c.update(model_type="llama")),
        "act": dict(config=lambda c: c.update(hidden_act="gelu")),
    }
    with pytest.raises(CheckpointError, match=match):
        gla.load_model(str(_edit(tmp_path, src, case, **edits[case])))


# ------------------------------------------------------------------------------------------ parity
def test_logits_equal_recurrent_oracle(ckpt, model):
    ids = ids_of(3, 2, 70)  # three chunks of 32, the last partial
    out = model(ids)
    assert out.shape == (2, 70, VOCAB) and out.dtype == torch.float32
    assert rel(out, gla_oracle(ckpt, ids)) < 1e-5


@pytest.mark.parametrize("over", [dict(num_kv_heads=1), dict(clamp_min=-0.05), dict(use_output_gate=False)])
def test_variants_equal_oracle(tmp_path, over):
    """Grouped kv heads, a clamped gate, no output gate: the forward equals the oracle, and the decode step
    (one packed projection per layer, split by the variant's own widths) continues it."""
    folder = gla.write_tiny_checkpoint(tmp_path / "v", seed=4, **over)
    ids = ids_of(5, 2, 40)
    m = gla.load_model(str(folder))
    full = m(ids)
    assert rel(full, gla_oracle(folder, ids)) < 1e-5
    assert m._packed(m.model.layers[0].attn) is not None
    _, cache = m.prefill(ids[:, :37])
    for j in range(37, 40):
        torch.testing.assert_close(m.step(ids[:, j], cache), full[:, j], rtol=0, atol=3e-5)


def test_chunked_core_equals_fla_naive_recurrence():
    """Extra check against fla's own pure-PyTorch reference (importing it needs triton; skipped otherwise)."""
    naive = pytest.importorskip("fla.ops.gla.naive")
    g = torch.Generator().manual_seed(6)
    b, T, H, K, V = 2, 45, 2, 16, 24
    q, k = torch.randn(b, T, H, K, generator=g), torch.randn(b, T, H, K, generator=g)
    v = torch.randn(b, T, H, V, generator=g)
    gk = F.logsigmoid(torch.randn(b, T, H, K, generator=g) * 3) / 16
    h0 = torch.randn(b, H, K, V, generator=g)
    o_ref, s_ref = naive.naive_recurrent_gla(q, k, v, gk, initial_state=h0, output_final_state=True)
    o, s = S.gla_chunked(q, k, v, gk, initial_state=h0)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ decode
@pytest.mark.parametrize("n", [1, 2, 31, 33])
def test_step_equals_parallel_forward(model, n):
    ids = ids_of(10 + n, 2, n + 6)
    full = model(ids)
    last, cache = model.prefill(ids[:, :n])
    assert cache.layers[0]["S"].shape == (2, 2, 16, 32) and cache.layers[0]["S"].dtype == torch.float32
    torch.testing.assert_close(last, full[:, n - 1], rtol=0, atol=3e-5)
    for j in range(n, n + 5):
        torch.testing.assert_close(model.step(ids[:, j], cache), full[:, j], rtol=0, atol=3e-5)


def test_projection_weights_are_packed_views(ckpt):
    """After loading (and after every ``.to()``), each layer's q / k / v / g / gk-low-rank weights and the MLP's
    gate / up weights are row blocks of one matrix: no copy, the state dict unchanged; the decode step uses the
    packed matmul and gives the step of the separate ones. Parameters replaced behind the model's back (assign)
    are noticed: the separate matmuls run, nothing stale is read."""
    m = gla.load_model(str(ckpt))
    raw = load_file(str(ckpt / "model.safetensors"))
    assert set(m.state_dict()) == set(raw) | ({"lm_head.weight"} - set(raw))
    for k, v in raw.items():
        assert torch.equal(m.state_dict()[k], v), k
    for blk in m.model.layers:
        for owner, mods in m._packs(blk):
            fused, sizes = m._packed(owner).weight, m._packed(owner).sizes
            assert all(mod.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr() for mod in mods)
            assert sizes == [mod.weight.shape[0] for mod in mods] and fused.shape[0] == sum(sizes)
    ids = ids_of(40, 2, 9)
    full = m(ids)
    _, cache = m.prefill(ids[:, :6])
    packed_steps = [m.step(ids[:, j], cache) for j in range(6, 9)]
    for j, got in zip(range(6, 9), packed_steps):
        torch.testing.assert_close(got, full[:, j], rtol=0, atol=3e-5)
    # replace one packed weight by an equal, separate tensor: the packing is stale, the separate path runs
    blk = m.model.layers[0]
    blk.attn.k_proj.weight = torch.nn.Parameter(blk.attn.k_proj.weight.detach().clone())
    blk.mlp.up_proj.weight = torch.nn.Parameter(blk.mlp.up_proj.weight.detach().clone())
    assert m._packed(blk.attn) is None and m._packed(blk.mlp) is None
    _, cache = m.prefill(ids[:, :6])
    for j, want in zip(range(6, 9), packed_steps):
        torch.testing.assert_close(m.step(ids[:, j], cache), want, rtol=0, atol=3e-5)
    m.double()  # any .to() packs again
    assert m._packed(blk.attn) is not None and m.model.layers[0].attn.q_proj.weight.dtype == torch.float64
    torch.testing.assert_close(m(ids).float(), full, rtol=0, atol=3e-5)


def test_select_keeps_rows(model):
    ids = ids_of(20, 3, 11)
    _, cache = model.prefill(ids)
    cache.select(torch.tensor([0, 2]))
    nxt = ids_of(21, 1, 2)[0]
    _, ref = model.prefill(ids[[0, 2]])
    torch.testing.assert_close(model.step(nxt, cache), model.step(nxt, ref), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ padding
def test_left_padding_is_invisible(model):
    seqs = [ids_of(30, 1, 66)[0].tolist(), ids_of(31, 1, 2)[0].tolist(), ids_of(32, 1, 35)[0].tolist()]
    ids, mask = left_pad(seqs, 0)
    batch = model(ids, mask)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(batch[i, -len(s):], model(torch.tensor([s]))[0], rtol=0, atol=3e-5)
    assert (model(ids)[1, -2:] - model(torch.tensor([seqs[1]]))[0]).abs().max() > 1e-3  # unmasked pads leak
    gen = greedy_generate(model, ids, mask, 8)
    for i, s in enumerate(seqs):
        assert gen.tokens[i] == greedy_generate(model, torch.tensor([s]), None, 8).tokens[0]


def test_static_decode_buffers(ckpt, model):
    m = gla.load_model(str(ckpt), cuda_graphs="static")
    seqs = [ids_of(40 + i, 1, 5 + 9 * i)[0].tolist() for i in range(3)]
    ids, mask = left_pad(seqs, 0)
    alone = [greedy_generate(model, torch.tensor([s]), None, 6).tokens[0] for s in seqs]
    lengths = {0: 5, 1: 1, 2: 6}
    stops = {tuple(alone[i][:lengths[i]]) for i in range(3)}
    out = greedy_generate(m, ids, mask, 6, is_done=lambda t: tuple(t) in stops)
    assert [len(t) for t in out.tokens] == [5, 1, 6]
    assert all(out.tokens[i] == alone[i][: len(out.tokens[i])] for i in range(3))


def test_bfloat16_on_cpu(ckpt, model):
    m = gla.load_model(str(ckpt), dtype=torch.bfloat16)
    ids = ids_of(50, 2, 40)
    assert rel(m(ids), model(ids)) < 5e-2
