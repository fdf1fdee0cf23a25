"""Mamba adapter (model_adapters/mamba.py): published-format loading, parity with an independent reading of
the mamba_ssm checkpoint and with transformers' own path, recurrent decode, padding invariance, cache select.

reference-models.md §10 items 8–10 and 12 for Mamba; CPU, fp32, tiny random checkpoints (d 64, 3 layers).
"""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from jrt_eval.kernels.mamba import reference as R
from jrt_eval.model_adapters import families, gla, mamba, mamba2
from jrt_eval.model_adapters.base import greedy_generate, left_pad
from jrt_eval.model_adapters.hub import CheckpointError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return mamba.write_tiny_checkpoint(tmp_path_factory.mktemp("mamba") / "ss", seed=0)


@pytest.fixture(scope="module")
def hazy_ckpt(tmp_path_factory):
    return mamba.write_tiny_checkpoint(tmp_path_factory.mktemp("mamba") / "hazy", seed=0, hazy=True)


@pytest.fixture(scope="module")
def model(ckpt):
    return mamba.load_model(str(ckpt))


@pytest.fixture(scope="module")
def hf_model(ckpt):
    return mamba.load_model(str(ckpt), impl="hf")


def ids_of(seed, b, t, vocab=50277):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ oracle
def mamba_ssm_oracle(folder, ids):
    """Logits of a mamba_ssm-format checkpoint, read straight from its files (keys, shapes, mamba_ssm defaults:
    RMSNorm eps 1e-5, tied head) and computed with the step-by-step references in float64."""
    cfg = json.loads((folder / "config.json").read_text())
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    sd = {k[len("model."):] if k.startswith("model.") else k: v.double() for k, v in sd.items() if "metrics" not in k}

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w

    emb = sd["backbone.embedding.weight"]
    r = emb[ids]
    for i in range(cfg["n_layer"]):
        p = f"backbone.layers.{i}."
        w_in = sd[p + "mixer.in_proj.weight"]
        d_inner = w_in.shape[0] // 2
        xz = rms(r, sd[p + "norm.weight"]) @ w_in.T
        x, z = xz[..., :d_inner], xz[..., d_inner:]
        xc = R.causal_conv1d_ref(x, sd[p + "mixer.conv1d.weight"][:, 0], sd[p + "mixer.conv1d.bias"])
        n = sd[p + "mixer.A_log"].shape[1]
        rank = sd[p + "mixer.dt_proj.weight"].shape[1]
        dbc = xc @ sd[p + "mixer.x_proj.weight"].T
        dt = dbc[..., :rank] @ sd[p + "mixer.dt_proj.weight"].T
        y, _ = R.selective_scan_ref(xc, dt, -torch.exp(sd[p + "mixer.A_log"]), dbc[..., rank:rank + n],
                                    dbc[..., rank + n:], D=sd[p + "mixer.D"], z=z, dt_bias=sd[p + "mixer.dt_proj.bias"])
        r = r + y @ sd[p + "mixer.out_proj.weight"].T
    return rms(r, sd["backbone.norm_f.weight"]) @ emb.T


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


# ------------------------------------------------------------------------------------------ loading
def test_state_spaces_format_round_trip(ckpt, model):
    cfg = json.loads((ckpt / "config.json").read_text())
    assert set(cfg) == {"d_model", "n_layer", "vocab_size", "ssm_cfg", "rms_norm", "residual_in_fp32",
                        "fused_add_norm", "pad_vocab_size_multiple"}  # state-spaces/mamba-130m's keys
    sd = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    assert "backbone.embedding.weight" in sd and sd["lm_head.weight"].data_ptr() == sd["backbone.embedding.weight"].data_ptr()
    assert model.family == "mamba" and model.vocab_rows == 50280 and model.max_length == 2048
    assert model.config == cfg
    assert mamba.detect(cfg) and not mamba2.detect(cfg) and not gla.detect(cfg)
    assert families.detect_family(cfg) == "mamba"
    s = model.spec
    assert (s.d_model, s.n_layer, s.d_state, s.d_conv, s.d_inner, s.dt_rank, s.eps) == (64, 3, 16, 4, 128, 4, 1e-5)
    assert model.hf.lm_head.weight is model.hf.backbone.embeddings.weight
    # every tensor of the file reached the model
    for k, v in sd.items():
        k2 = k.replace("backbone.embedding.", "backbone.embeddings.")
        assert torch.equal(model.hf.state_dict()[k2], v), k


def test_hazy_format(hazy_ckpt):
    cfg = json.loads((hazy_ckpt / "config.json").read_text())
    raw = torch.load(hazy_ckpt / "pytorch_model.bin", weights_only=True)
    assert all(k.startswith("model.") for k in raw) and any("metrics" in k for k in raw)
    assert raw["model.train_metrics.num-tokens.count"].dtype == torch.int64
    assert families.detect_family(cfg) == "mamba" and families.is_hazy_mamba(cfg)
    m = mamba.load_model(str(hazy_ckpt))
    assert m.vocab_rows == 50288 and m.spec.hazy  # 50277 padded to a multiple of 16; GPT-2 ids < 50257
    ids = ids_of(1, 2, 9, 50257)
    assert rel(m(ids), mamba_ssm_oracle(hazy_ckpt, ids)) < 1e-5


def test_hf_format_folder(tmp_path, ckpt, model):
    folder = mamba.write_tiny_checkpoint(tmp_path / "hf", seed=0, hf_format=True)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "mamba" and (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
    m = mamba.load_model(str(folder))
    assert m.spec.fmt == "hf" and m.vocab_rows == 50280
    ids = ids_of(2, 2, 11)
    torch.testing.assert_close(m(ids), model(ids), rtol=0, atol=0)  # same seed, same weights


def _edit(src, dst, config=None, weights=None):
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if config:
        config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    sd = torch.load(src / "pytorch_model.bin", weights_only=True)
    if weights:
        weights(sd)
    torch.save(sd, dst / "pytorch_model.bin")
    return dst


def test_tied_head_optional_but_must_match(tmp_path, ckpt, model):
    no_head = _edit(ckpt, tmp_path / "nohead", weights=lambda sd: sd.pop("lm_head.weight"))
    ids = ids_of(3, 1, 6)
    torch.testing.assert_close(mamba.load_model(str(no_head))(ids), model(ids), rtol=0, atol=0)

    def untie(sd):
        sd["lm_head.weight"] = sd["lm_head.weight"].clone() + 1

    with pytest.raises(CheckpointError, match="ties the embeddings"):
        mamba.load_model(str(_edit(ckpt, tmp_path / "untied", weights=untie)))


@pytest.mark.parametrize("case, match", [
    ("missing", r"missing 1: backbone\.layers\.1\.mixer\.D"),
    ("unexpected", r"unexpected 1: backbone\.layers\.0\.mixer\.extra"),
    ("shape", r"shapes do not match config\.json: backbone\.embeddings\.weight \(50280, 64\) \(expected \(50288, 64\)\)"),
    ("width", r"shapes do not match.*backbone\.embeddings\.weight \(50280, 64\) \(expected \(50280, 96\)\)"),
    ("layers", r"missing \d+: backbone\.layers\.3\."),
    ("bad_int", r"'n_layer' must be an integer"),
    ("no_d_model", r"not a Mamba config"),
    ("ssm_key", r"unsupported Mamba ssm_cfg keys \['d_ssm'\]"),
    ("mlp", r"d_intermediate > 0"),
    ("layernorm", r"rms_norm false"),
    ("non_float", r"non-float weights"),
])
def test_named_errors(tmp_path, ckpt, case, match):
    edits = {
        "missing": dict(weights=lambda sd: sd.pop("backbone.layers.1.mixer.D")),
        "unexpected": dict(weights=lambda sd: sd.update({"backbone.layers.0.mixer.extra": torch.zeros(2)})),
        "shape": dict(config=lambda c: c.update(pad_vocab_size_multiple=16)),   # config says 50288 rows, file has 50280
        "width": dict(config=lambda c: c.update(d_model=96)),
        "layers": dict(config=lambda c: c.update(n_layer=5)),
        "bad_int": dict(config=lambda c: c.update(n_layer="three")),
        "no_d_model": dict(config=lambda c: c.pop("d_model")),
        "ssm_key": dict(config=lambda c: c.update(ssm_cfg={"d_ssm": 64})),
        "mlp": dict(config=lambda c: c.update(d_intermediate=128)),
        "layernorm": dict(config=lambda c: c.update(rms_norm=False)),
        "non_float": dict(weights=lambda sd: sd.update({"backbone.layers.0.mixer.D": torch.ones(128, dtype=torch.long)})),
    }
    folder = _edit(ckpt, tmp_path / case, **edits[case])
    with pytest.raises(CheckpointError, match=match):
        mamba.load_model(str(folder))


def test_malformed_config_and_missing_weights(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        mamba.load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(mamba.tiny_config()))
    with pytest.raises(CheckpointError, match="holds no weights"):
        mamba.load_model(str(tmp_path))


# ------------------------------------------------------------------------------------------ parity
def test_logits_equal_mamba_ssm_oracle(ckpt, model):
    ids = ids_of(4, 2, 21)
    ref = mamba_ssm_oracle(ckpt, ids)
    out = model(ids)
    assert out.dtype == torch.float32 and out.shape == (2, 21, 50280)
    assert rel(out, ref) < 1e-5, rel(out, ref)


def test_fast_path_equals_transformers_path(model, hf_model):
    from transformers import MambaForCausalLM

    assert isinstance(hf_model.hf, MambaForCausalLM) and hf_model.impl == "hf"
    seqs = [ids_of(5, 1, 23)[0].tolist(), ids_of(6, 1, 5)[0].tolist(), ids_of(7, 1, 1)[0].tolist()]
    ids, mask = left_pad(seqs, 0)
    keep = mask.bool()
    a, b = model(ids, mask), hf_model(ids, mask)
    assert (a[keep] - b[keep]).abs().max() < 2e-5
    la, ca = model.prefill(ids, mask)
    lb, cb = hf_model.prefill(ids, mask)
    assert (la - lb).abs().max() < 2e-5
    nxt = la.argmax(-1)
    for _ in range(3):
        la, lb = model.step(nxt, ca), hf_model.step(nxt, cb)
        assert (la - lb).abs().max() < 2e-5
        nxt = la.argmax(-1)


def test_transformers_independent_build_matches(ckpt, model):
    """transformers' MambaForCausalLM built from the converted config by transformers itself (from_pretrained on
    a saved copy) gives our logits: guards hf_config() and the key conversion."""
    import tempfile

    from transformers import MambaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model.hf.save_pretrained(tmp)
        ref = MambaForCausalLM.from_pretrained(tmp).eval()
    ids = ids_of(8, 2, 17)
    with torch.no_grad():
        expect = ref(ids).logits
    assert (model(ids) - expect).abs().max() < 2e-5


# ------------------------------------------------------------------------------------------ decode
@pytest.mark.parametrize("impl", ["fast", "hf"])
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_step_equals_parallel_forward(model, hf_model, impl, n):
    m = model if impl == "fast" else hf_model
    ids = ids_of(9 + n, 2, n + 6)
    full = model(ids)
    last, cache = m.prefill(ids[:, :n])
    assert last.dtype == torch.float32 and last.shape == (2, 50280)
    torch.testing.assert_close(last, full[:, n - 1], rtol=0, atol=3e-5)
    for j in range(n, n + 5):
        torch.testing.assert_close(m.step(ids[:, j], cache), full[:, j], rtol=0, atol=3e-5)


def test_cache_state_is_the_recurrence(model, ckpt):
    """The prefill cache holds the last d_conv-1 pre-conv inputs and the SSM state of the scan (float32)."""
    ids = ids_of(20, 1, 2)  # shorter than the conv window: zeros in front
    _, cache = model.prefill(ids)
    conv, ssm = cache.layers[0]["conv"], cache.layers[0]["ssm"]
    assert conv.shape == (1, 128, 3) and ssm.shape == (1, 128, 16) and ssm.dtype == torch.float32
    assert torch.all(conv[..., 0] == 0) and torch.any(conv[..., 1:] != 0)


def test_select_keeps_rows(model):
    ids = ids_of(21, 3, 9)
    _, cache = model.prefill(ids)
    cache.select(torch.tensor([2, 0]))
    assert cache.batch_size == 2
    nxt = ids_of(22, 1, 2)[0]
    got = model.step(nxt, cache)
    _, ref_cache = model.prefill(ids[[2, 0]])
    torch.testing.assert_close(got, model.step(nxt, ref_cache), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ padding
@pytest.mark.parametrize("impl", ["fast", "hf"])
def test_left_padding_is_invisible(model, hf_model, impl):
    m = model if impl == "fast" else hf_model
    seqs = [ids_of(30, 1, 19)[0].tolist(), ids_of(31, 1, 2)[0].tolist(), ids_of(32, 1, 7)[0].tolist()]
    ids, mask = left_pad(seqs, 0)
    batch = m(ids, mask)
    for i, s in enumerate(seqs):
        alone = m(torch.tensor([s]))
        torch.testing.assert_close(batch[i, -len(s):], alone[0], rtol=0, atol=2e-5)
    # without the mask the pads enter the state: the check above can fail
    unmasked = m(ids)
    assert (unmasked[1, -2:] - m(torch.tensor([seqs[1]]))[0]).abs().max() > 1e-3
    gen = greedy_generate(m, ids, mask, 8, vocab_limit=50277)
    for i, s in enumerate(seqs):
        one = greedy_generate(m, torch.tensor([s]), None, 8, vocab_limit=50277)
        assert gen.tokens[i] == one.tokens[0]
    assert all(max(t) < 50277 for t in gen.tokens)


def test_rows_leaving_the_batch(model):
    """greedy_generate drops finished rows (cache.select); the rest must be unaffected."""
    seqs = [ids_of(40 + i, 1, 4 + 3 * i)[0].tolist() for i in range(3)]
    ids, mask = left_pad(seqs, 0)
    alone = [greedy_generate(model, torch.tensor([s]), None, 7).tokens[0] for s in seqs]
    lengths = {0: 2, 1: 7, 2: 4}
    done_at = {tuple(alone[i][:lengths[i]]): i for i in range(3)}
    out = greedy_generate(model, ids, mask, 7, is_done=lambda toks: tuple(toks) in done_at)
    for i in range(3):
        assert out.tokens[i] == alone[i][: len(out.tokens[i])]
        assert len(out.tokens[i]) == lengths[i]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_overlapped_decode_matches_plain_loop(model, device):
    """greedy_generate(overlap=True) (the CUDA default) queues step t + 1 before reading step t's tokens; rows that
    finish meanwhile are dropped from that step's result. Same tokens as the plain loop and as each prompt alone
    (on CPU the same bookkeeping runs without the asynchronous copy)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA")
    m = copy.deepcopy(model).to(device)
    seqs = [ids_of(40 + i, 1, 4 + 3 * i)[0].tolist() for i in range(3)]
    ids, mask = left_pad(seqs, 0, device=device)
    alone = [greedy_generate(m, torch.tensor([s], device=device), None, 7, overlap=False).tokens[0] for s in seqs]
    lengths = {0: 2, 1: 7, 2: 4}
    done_at = {tuple(alone[i][:lengths[i]]): i for i in range(3)}
    for overlap in (False, True):
        out = greedy_generate(m, ids, mask, 7, is_done=lambda toks: tuple(toks) in done_at, overlap=overlap)
        for i in range(3):
            assert out.tokens[i] == alone[i][:lengths[i]]
        assert out.steps == 6  # the longest row's 6 steps (a step is one batch step, whoever is in it)


def test_decay_rates_cached_per_weight_version(ckpt):
    """A = -exp(A_log) is computed once, not per decode step, and follows in-place edits of A_log."""
    m = mamba.load_model(str(ckpt))
    mixer = m.hf.backbone.layers[0].mixer
    a = m._neg_exp_A(mixer)
    assert a is m._neg_exp_A(mixer)
    torch.testing.assert_close(a, -torch.exp(mixer.A_log.float()), rtol=0, atol=0)
    ids = ids_of(70, 1, 6)
    before = m(ids)
    with torch.no_grad():
        mixer.A_log.add_(0.5)
    assert not torch.equal(m._neg_exp_A(mixer), a)
    torch.testing.assert_close(m._neg_exp_A(mixer), -torch.exp(mixer.A_log.float()), rtol=0, atol=0)
    assert not torch.equal(m(ids), before)


def test_half_precision_keeps_recurrence_params_fp32(ckpt, model):
    m = mamba.load_model(str(ckpt), dtype=torch.bfloat16)
    mixer = m.hf.backbone.layers[0].mixer
    assert mixer.in_proj.weight.dtype == torch.bfloat16
    assert mixer.A_log.dtype == mixer.D.dtype == mixer.dt_proj.bias.dtype == torch.float32
    ids = ids_of(50, 2, 12)
    out = m(ids)
    assert out.dtype == torch.float32
    assert rel(out, model(ids)) < 5e-2


def test_static_decode_buffers_follow_select_and_interleaving(ckpt, model):
    """The CUDA-graph bookkeeping (static full-batch buffers, live rows, hand-over between caches), run eagerly
    on CPU with cuda_graphs="static": must give the eager decode. Tolerance 1e-5, not 0: the static path runs
    its matmuls at the full batch, and on a many-core CPU the GEMM blocking (so the rounding) depends on the
    batch size (3.8e-6 seen on 16 cores); a bookkeeping error moves logits by O(1)."""
    m = mamba.load_model(str(ckpt), cuda_graphs="static")
    a_ids, b_ids = ids_of(60, 3, 8), ids_of(61, 3, 5)
    la, ca = m.prefill(a_ids)
    ra, rca = model.prefill(a_ids)
    toks = [ids_of(62 + i, 1, 3)[0] for i in range(6)]
    torch.testing.assert_close(m.step(toks[0], ca), model.step(toks[0], rca), rtol=0, atol=1e-5)
    assert ca._runner is not None and ca.batch_size == 3
    ca.select(torch.tensor([2, 0]))
    rca.select(torch.tensor([2, 0]))
    assert ca.batch_size == 2 and ca.layers[0]["ssm"].shape[0] == 3  # static buffers keep the full batch
    torch.testing.assert_close(m.step(toks[1][:2], ca), model.step(toks[1][:2], rca), rtol=0, atol=1e-5)
    # a second cache of the same batch size takes the buffers over; the first gets its own copy back
    lb, cb = m.prefill(b_ids)
    _, rcb = model.prefill(b_ids)
    torch.testing.assert_close(m.step(toks[2], cb), model.step(toks[2], rcb), rtol=0, atol=1e-5)
    assert ca._runner is None and ca.layers[0]["ssm"].shape[0] == 2
    torch.testing.assert_close(m.step(toks[3][:2], ca), model.step(toks[3][:2], rca), rtol=0, atol=1e-5)
    torch.testing.assert_close(m.step(toks[4], cb), model.step(toks[4], rcb), rtol=0, atol=1e-5)
    out = greedy_generate(m, a_ids, None, 6)
    assert out.tokens == greedy_generate(model, a_ids, None, 6).tokens


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dtype(tmp_path_factory, family, dtype):
    """Both Mamba families: the decode state in the weights' dtype (the default: mamba_ssm's cache, stepped in
    float32 and rounded once per token) against ``state_dtype="float32"``; the prefill is the same either way."""
    mod = {"mamba": mamba, "mamba2": mamba2}[family]
    folder = str(mod.write_tiny_checkpoint(tmp_path_factory.mktemp(family) / "ss", seed=0))
    m = mod.load_model(folder, dtype=dtype)
    f32 = mod.load_model(folder, dtype=dtype, state_dtype="float32")
    assert m.state_dtype == "model" and f32.state_dtype == "float32"
    ids = ids_of(60, 2, 20)
    last, cache = m.prefill(ids[:, :14])
    last_f, cache_f = f32.prefill(ids[:, :14])
    assert cache.layers[0]["ssm"].dtype == dtype and cache_f.layers[0]["ssm"].dtype == torch.float32
    assert torch.equal(last, last_f)
    for j in range(14, 20):
        got, want = m.step(ids[:, j], cache), f32.step(ids[:, j], cache_f)
        if dtype == torch.float32:
            assert torch.equal(got, want)
        else:
            assert 0 < rel(got, want) < 2e-2
    with pytest.raises(ValueError, match="state_dtype"):
        mod.load_model(folder, state_dtype="int8")
