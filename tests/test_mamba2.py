"""Mamba-2 adapter (model_adapters/mamba2.py): published-format loading with every transformers default that
differs from mamba_ssm overridden, parity with an independent reading of the checkpoint (sequential SSD) and with
transformers' own path, recurrent decode, padding invariance, cache select.

reference-models.md §10 items 8–10 and 12 for Mamba-2; CPU, fp32, tiny random checkpoints (d 64, 3 layers,
headdim 16, d_state 16, chunk 16 so that prompts cross chunk borders).
"""
import json

import pytest
import torch
import torch.nn.functional as F

from jrt_eval.kernels.mamba import reference as R
from jrt_eval.model_adapters import families, gla, mamba, mamba2
from jrt_eval.model_adapters.base import greedy_generate, left_pad
from jrt_eval.model_adapters.hub import CheckpointError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return mamba2.write_tiny_checkpoint(tmp_path_factory.mktemp("mamba2") / "ss", seed=0)


@pytest.fixture(scope="module")
def model(ckpt):
    return mamba2.load_model(str(ckpt))


@pytest.fixture(scope="module")
def hf_model(ckpt):
    return mamba2.load_model(str(ckpt), impl="hf")


def ids_of(seed, b, t, vocab=50277):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def mamba2_oracle(folder, ids):
    """Logits of a mamba_ssm Mamba-2 checkpoint read straight from its files, with mamba_ssm's Mamba2 defaults for
    what ssm_cfg leaves out (d_state 128, headdim 64, ngroups 1, eps 1e-5, norm_before_gate False), the SSM as a
    sequential scan and the gated norm written out, in float64."""
    cfg = json.loads((folder / "config.json").read_text())
    ssm = cfg["ssm_cfg"]
    N, P, G = ssm.get("d_state", 128), ssm.get("headdim", 64), ssm.get("ngroups", 1)
    sd = {k: v.double() for k, v in torch.load(folder / "pytorch_model.bin", weights_only=True).items()}

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w

    emb = sd["backbone.embedding.weight"]
    r = emb[ids]
    b, T = ids.shape
    for i in range(cfg["n_layer"]):
        p = f"backbone.layers.{i}.mixer."
        d_inner = sd[p + "out_proj.weight"].shape[1]
        H = d_inner // P
        zxbcdt = rms(r, sd[f"backbone.layers.{i}.norm.weight"]) @ sd[p + "in_proj.weight"].T
        z, xBC, dt = zxbcdt[..., :d_inner], zxbcdt[..., d_inner:2 * d_inner + 2 * G * N], zxbcdt[..., -H:]
        xBC = R.causal_conv1d_ref(xBC, sd[p + "conv1d.weight"][:, 0], sd[p + "conv1d.bias"])
        x, B, C = xBC[..., :d_inner], xBC[..., d_inner:d_inner + G * N], xBC[..., d_inner + G * N:]
        y, _ = R.ssd_sequential_ref(x.reshape(b, T, H, P), dt, -torch.exp(sd[p + "A_log"]), B.reshape(b, T, G, N),
                                    C.reshape(b, T, G, N), D=sd[p + "D"], dt_bias=sd[p + "dt_bias"])
        g = y.reshape(b, T, d_inner) * F.silu(z)  # gate, then norm (norm_before_gate=False)
        g = g.reshape(b, T, G, d_inner // G)
        g = (g / torch.sqrt((g * g).mean(-1, keepdim=True) + 1e-5)).reshape(b, T, d_inner) * sd[p + "norm.weight"]
        r = r + g @ sd[p + "out_proj.weight"].T
    return rms(r, sd["backbone.norm_f.weight"]) @ emb.T


# ------------------------------------------------------------------------------------------ loading
def test_round_trip_and_conversion(ckpt, model):
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["ssm_cfg"]["layer"] == "Mamba2" and cfg["tie_embeddings"] is True
    assert mamba2.detect(cfg) and not mamba.detect(cfg) and not gla.detect(cfg)
    assert families.detect_family(cfg) == "mamba2"
    assert model.family == "mamba2" and model.vocab_rows == 50288 and model.max_length == 2048 and model.config == cfg
    hc = model.hf.config  # the transformers defaults that differ from mamba_ssm are all overridden
    assert (hc.n_groups, hc.num_heads, hc.head_dim, hc.state_size, hc.chunk_size, hc.vocab_size) == (1, 8, 16, 16, 16, 50288)
    assert hc.tie_word_embeddings and hc.conv_kernel == 4 and hc.expand == 2 and hc.layer_norm_epsilon == 1e-5
    assert model.hf.lm_head.weight is model.hf.backbone.embeddings.weight
    sd = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    for k, v in sd.items():
        assert torch.equal(model.hf.state_dict()[k.replace("backbone.embedding.", "backbone.embeddings.")], v), k


def test_real_130m_config_is_converted_with_mamba_ssm_defaults():
    cfg = {"d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba2"},
           "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
           "pad_vocab_size_multiple": 16, "tie_embeddings": True}  # state-spaces/mamba2-130m (§6.1)
    spec = mamba2.parse_config(cfg)
    hc = mamba2.hf_config(spec)
    assert (hc.num_heads, hc.head_dim, hc.state_size, hc.n_groups, hc.chunk_size) == (24, 64, 128, 1, 256)
    assert hc.vocab_size == 50288 and hc.tie_word_embeddings and hc.hidden_size == 768
    shapes = mamba2._expected_shapes(spec)
    assert shapes["backbone.layers.0.mixer.in_proj.weight"] == (3352, 768)  # z | xBC | dt = 1536 + 1792 + 24
    assert shapes["backbone.layers.0.mixer.conv1d.weight"] == (1792, 1, 4)


@pytest.mark.parametrize("case, match", [
    ("missing", r"missing 1: backbone\.layers\.2\.mixer\.dt_bias"),
    ("unexpected", r"unexpected 1: backbone\.layers\.0\.mixer\.z_bias"),
    ("vocab", r"backbone\.embeddings\.weight \(50288, 64\) \(expected \(50280, 64\)\)"),
    ("headdim", r"shapes do not match config\.json: .*in_proj\.weight"),
    ("state", r"shapes do not match config\.json: .*in_proj\.weight"),
    ("groups", r"8 heads do not split into 3 groups"),
    ("nbg", r"norm_before_gate=True is not supported"),
    ("dssm", r"d_ssm 64 < d_inner"),
    ("ssm_key", r"unsupported Mamba2 ssm_cfg keys \['mimo'\]"),
    ("hybrid", r"attn_layer_idx \[1\] \(hybrid attention\)"),
    ("bad_limit", r"dt_limit"),
])
def test_named_errors(tmp_path, ckpt, case, match):
    cfg = json.loads((ckpt / "config.json").read_text())
    sd = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    ssm = cfg["ssm_cfg"]
    {
        "missing": lambda: sd.pop("backbone.layers.2.mixer.dt_bias"),
        "unexpected": lambda: sd.update({"backbone.layers.0.mixer.z_bias": torch.zeros(3)}),
        "vocab": lambda: cfg.update(pad_vocab_size_multiple=8),
        "headdim": lambda: ssm.update(headdim=32),
        "state": lambda: ssm.update(d_state=32),
        "groups": lambda: ssm.update(ngroups=3),
        "nbg": lambda: ssm.update(norm_before_gate=True),
        "dssm": lambda: ssm.update(d_ssm=64),
        "ssm_key": lambda: ssm.update(mimo=2),
        "hybrid": lambda: cfg.update(attn_layer_idx=[1]),
        "bad_limit": lambda: ssm.update(dt_limit=[0.5]),
    }[case]()
    folder = tmp_path / case
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save(sd, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=match):
        mamba2.load_model(str(folder))


# ------------------------------------------------------------------------------------------ parity
def test_logits_equal_sequential_oracle(ckpt, model):
    ids = ids_of(1, 2, 37)  # 3 chunks of 16, the last partial
    out = model(ids)
    assert out.shape == (2, 37, 50288) and out.dtype == torch.float32
    assert rel(out, mamba2_oracle(ckpt, ids)) < 1e-5


def test_fast_path_equals_transformers(model, hf_model):
    from transformers import Mamba2ForCausalLM

    assert isinstance(hf_model.hf, Mamba2ForCausalLM)
    seqs = [ids_of(2, 1, 40)[0].tolist(), ids_of(3, 1, 17)[0].tolist(), ids_of(4, 1, 3)[0].tolist()]
    ids, mask = left_pad(seqs, 0)
    keep = mask.bool()
    a, b = model(ids, mask), hf_model(ids, mask)
    assert (a[keep] - b[keep]).abs().max() < 3e-5
    la, ca = model.prefill(ids, mask)
    lb, cb = hf_model.prefill(ids, mask)
    assert (la - lb).abs().max() < 3e-5
    nxt = la.argmax(-1)
    for _ in range(3):
        la, lb = model.step(nxt, ca), hf_model.step(nxt, cb)
        assert (la - lb).abs().max() < 3e-5
        nxt = la.argmax(-1)


def test_transformers_independent_build_matches(model):
    import tempfile

    from transformers import Mamba2ForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model.hf.save_pretrained(tmp)
        ref = Mamba2ForCausalLM.from_pretrained(tmp).eval()
    ids = ids_of(5, 2, 35)
    with torch.no_grad():
        expect = ref(ids).logits
    assert (model(ids) - expect).abs().max() < 3e-5


def test_chunk_size_does_not_change_results(ckpt, model, tmp_path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["ssm_cfg"]["chunk_size"] = 5
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "pytorch_model.bin").symlink_to(ckpt / "pytorch_model.bin")
    ids = ids_of(6, 2, 23)
    assert (mamba2.load_model(str(tmp_path))(ids) - model(ids)).abs().max() < 3e-5


# ------------------------------------------------------------------------------------------ decode
@pytest.mark.parametrize("impl", ["fast", "hf"])
@pytest.mark.parametrize("n", [1, 2, 3, 17])
def test_step_equals_parallel_forward(model, hf_model, impl, n):
    m = model if impl == "fast" else hf_model
    ids = ids_of(10 + n, 2, n + 6)
    full = model(ids)
    last, cache = m.prefill(ids[:, :n])
    torch.testing.assert_close(last, full[:, n - 1], rtol=0, atol=3e-5)
    for j in range(n, n + 5):
        torch.testing.assert_close(m.step(ids[:, j], cache), full[:, j], rtol=0, atol=3e-5)


def test_cache_shapes(model):
    _, cache = model.prefill(ids_of(20, 2, 5))
    st = cache.layers[0]
    assert st["conv"].shape == (2, 128 + 2 * 16, 3) and st["ssm"].shape == (2, 8, 16, 16)
    assert st["ssm"].dtype == torch.float32


def test_select_keeps_rows(model):
    ids = ids_of(21, 3, 19)
    _, cache = model.prefill(ids)
    cache.select([1])
    nxt = ids_of(22, 1, 1)[0]
    _, ref = model.prefill(ids[[1]])
    torch.testing.assert_close(model.step(nxt, cache), model.step(nxt, ref), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ padding
@pytest.mark.parametrize("impl", ["fast", "hf"])
def test_left_padding_is_invisible(model, hf_model, impl):
    m = model if impl == "fast" else hf_model
    seqs = [ids_of(30, 1, 41)[0].tolist(), ids_of(31, 1, 1)[0].tolist(), ids_of(32, 1, 18)[0].tolist()]
    ids, mask = left_pad(seqs, 0)
    batch = m(ids, mask)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(batch[i, -len(s):], m(torch.tensor([s]))[0], rtol=0, atol=3e-5)
    assert (m(ids)[1, -1:] - m(torch.tensor([seqs[1]]))[0]).abs().max() > 1e-3  # unmasked pads do leak
    gen = greedy_generate(m, ids, mask, 8, vocab_limit=50277)
    for i, s in enumerate(seqs):
        assert gen.tokens[i] == greedy_generate(m, torch.tensor([s]), None, 8, vocab_limit=50277).tokens[0]


def test_static_decode_buffers(ckpt, model):
    m = mamba2.load_model(str(ckpt), cuda_graphs="static")
    ids = ids_of(40, 3, 12)
    seqs = [ids[i, 3 * i:].tolist() for i in range(3)]
    pids, mask = left_pad(seqs, 0)
    lengths = {0: 2, 1: 6, 2: 4}
    alone = [greedy_generate(model, torch.tensor([s]), None, 6).tokens[0] for s in seqs]
    stops = {tuple(alone[i][:lengths[i]]) for i in range(3)}
    out = greedy_generate(m, pids, mask, 6, is_done=lambda t: tuple(t) in stops)
    assert [len(t) for t in out.tokens] == [2, 6, 4]
    assert all(out.tokens[i] == alone[i][: len(out.tokens[i])] for i in range(3))


def test_half_precision(ckpt, model):
    m = mamba2.load_model(str(ckpt), dtype=torch.bfloat16)
    mixer = m.hf.backbone.layers[0].mixer
    assert mixer.in_proj.weight.dtype == torch.bfloat16
    assert mixer.A_log.dtype == mixer.D.dtype == mixer.dt_bias.dtype == torch.float32
    ids = ids_of(50, 2, 20)
    assert rel(m(ids), model(ids)) < 5e-2
