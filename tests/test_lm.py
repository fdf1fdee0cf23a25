"""The lm-eval front end of our model families on tiny checkpoints: batch-size invariance of greedy text,
stop strings, loglikelihood consistent with decoding, truncation, bad input, REF quirk mode."""
import logging

import pytest
import torch
from lm_eval.api.instance import Instance

from jrt_eval.model_adapters.hub import CheckpointError
from jrt_eval.model_adapters.lm import AutoJRTLM, JRTLM
from jrt_eval.tiny import tiny_checkpoint

FAMILIES = ["based", "jrt_rnn", "attn", "mamba", "mamba2", "gla"]
PROMPTS = [
    "The Evil Dead details. Director: Sam Raimi\nYear: 1983. Director:",
    "Short one.",
    "Information about Title. " + "A much longer prompt with many words in it, " * 12 + "Title:",
    "Oakland would get the early lead as JaMarcus Russell completed a pass. The first touchdown was scored by",
    "x",
]


@pytest.fixture(scope="module", params=FAMILIES)
def lm(request, tmp_path_factory):
    path = tiny_checkpoint(request.param, root=tmp_path_factory.getbasetemp() / "tiny")
    model = JRTLM.__new__(_family_class(request.param))
    model.__init__(pretrained=str(path), device="cpu", batch_size=1)
    return model


def _family_class(name):
    return type(f"Test{name}", (JRTLM,), {"FAMILY": name})


def gen_requests(prompts, until=("\n",), max_gen_toks=12):
    return [Instance("generate_until", {}, (p, {"until": list(until), "max_gen_toks": max_gen_toks}), i)
            for i, p in enumerate(prompts)]


def test_greedy_text_does_not_depend_on_batch_size(lm):
    lm.batch_size = 1
    alone = lm.generate_until(gen_requests(PROMPTS), disable_tqdm=True)
    lm.batch_size = 5
    together = lm.generate_until(gen_requests(PROMPTS), disable_tqdm=True)
    lm.batch_size = 2
    pairs = lm.generate_until(gen_requests(PROMPTS), disable_tqdm=True)
    assert alone == together == pairs
    assert any(t for t in alone)


def test_stop_strings_cut_each_row(lm):
    lm.batch_size = 5
    free = lm.generate_until(gen_requests(PROMPTS, until=()), disable_tqdm=True)
    # use a piece of each free-running continuation as the stop string: the row must end just before it
    stops = [t[len(t) // 2:len(t) // 2 + 2] for t in free]
    for prompt, text, stop in zip(PROMPTS, free, stops):
        if not stop.strip():
            continue
        (cut,) = lm.generate_until(gen_requests([prompt], until=(stop,)), disable_tqdm=True)
        assert cut == text.split(stop)[0]


def test_loglikelihood_agrees_with_greedy_decoding(lm):
    ctx = lm.tok_encode(PROMPTS[0])
    ids, _ = lm._batch([ctx])
    with torch.inference_mode():
        logits, cache = lm.model.prefill(ids, None)
        cont, expected = [], 0.0
        for _ in range(4):
            logits[..., lm.vocab_limit:] = float("-inf")
            lp = torch.log_softmax(logits.float(), -1)
            tok = int(lp.argmax(-1))
            expected += float(lp[0, tok])
            cont.append(tok)
            logits = lm.model.step(torch.tensor([tok]), cache)
    ((score, greedy),) = lm._loglikelihood_tokens([(("a", "b"), ctx, cont)], disable_tqdm=True)
    assert greedy
    assert score == pytest.approx(expected, abs=1e-3)
    ((worse, greedy2),) = lm._loglikelihood_tokens([(("a", "b"), ctx, cont[:-1] + [(cont[-1] + 1) % 1000])],
                                                    disable_tqdm=True)
    assert not greedy2 and worse < score


def test_loglikelihood_is_batch_invariant(lm):
    reqs = [(("c", "x"), lm.tok_encode(p), lm.tok_encode(" and then")) for p in PROMPTS]
    lm.batch_size = 1
    one = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    lm.batch_size = 5
    many = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    for (a, ga), (b, gb) in zip(one, many):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb


def test_long_prompts_are_left_truncated_with_a_warning(lm, caplog):
    long_prompt = "word " * 3000
    before = lm.truncated
    with caplog.at_level(logging.WARNING, logger="jrt_eval"):
        (out,) = lm.generate_until(gen_requests([long_prompt], max_gen_toks=3), disable_tqdm=True)
    assert lm.truncated == before + 1
    assert "left-truncated" in caplog.text


def test_sampling_is_refused(lm):
    req = [Instance("generate_until", {}, ("hi", {"until": ["\n"], "do_sample": True, "temperature": 0.7}), 0)]
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until(req, disable_tqdm=True)


def test_auto_family_and_bad_input(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tiny"
    based = tiny_checkpoint("based", root=root)
    auto = AutoJRTLM(pretrained=str(based), device="cpu")
    assert auto.family == "based" and auto.tokenizer_name == "gpt2"
    with pytest.raises(CheckpointError, match="is a based checkpoint"):
        _family_class("mamba")(pretrained=str(based), device="cpu")
    with pytest.raises(ValueError, match="embedding rows"):
        _family_class("based")(pretrained=str(based), device="cpu", tokenizer="EleutherAI/gpt-neox-20b")
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        _family_class("based")(pretrained=str(based), device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="unsupported dtype"):
        _family_class("based")(pretrained=str(based), device="cpu", dtype="int8")
    with pytest.raises(CheckpointError):
        AutoJRTLM(pretrained=str(tmp_path_factory.mktemp("empty")), device="cpu")


def test_reference_quirks_let_pads_into_the_state(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tiny"
    path = tiny_checkpoint("based", root=root)
    quirky = _family_class("based")(pretrained=str(path), device="cpu", reference_quirks=True)
    clean = _family_class("based")(pretrained=str(path), device="cpu")
    assert quirky.pad_id == 220 and quirky.model is not clean.model
    ids, mask = quirky._batch([[1, 2, 3], [4, 5, 6, 7, 8]])
    assert mask is None and ids[0, 0].item() == 220  # REF: " " pads, no mask
    # equal-length prompts have no pads: both modes agree on the first generated token (the second token
    # differs only through the double-added Based decode step)
    p = [PROMPTS[0]]
    q = quirky.generate_until(gen_requests(p, until=(), max_gen_toks=1), disable_tqdm=True)
    c = clean.generate_until(gen_requests(p, until=(), max_gen_toks=1), disable_tqdm=True)
    assert q == c


def test_precast_matmul_weights_are_autocast_math(tmp_path_factory):
    """amp_bf16 stores Linear/Conv weights in bf16 once; under autocast that is bit-identical math."""
    import copy

    from jrt_eval.model_adapters.hazy_gpt import load_model
    from jrt_eval.model_adapters.base import cast_matmul_weights

    path = tiny_checkpoint("based", root=tmp_path_factory.getbasetemp() / "tiny")
    model = load_model(str(path))
    cast = copy.deepcopy(model)
    cast_matmul_weights(cast, torch.bfloat16)
    assert cast.transformer.layers[0].mixer.in_proj.weight.dtype == torch.bfloat16
    assert cast.transformer.layers[0].norm1.weight.dtype == torch.float32  # norms stay fp32, as under autocast
    ids = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, ca = model.prefill(ids)
        b, cb = cast.prefill(ids)
        assert torch.equal(a, b)
        for tok in (5, 7):
            nxt = torch.tensor([tok, tok])
            assert torch.equal(model.step(nxt, ca), cast.step(nxt, cb))


def test_family_loader_options_pass_through(tmp_path_factory, caplog):
    root = tmp_path_factory.getbasetemp() / "tiny"
    path = str(tiny_checkpoint("mamba", root=root))
    fast = _family_class("mamba")(pretrained=path, device="cpu", batch_size=2)
    with caplog.at_level(logging.WARNING, logger="jrt_eval"):
        hf = _family_class("mamba")(pretrained=path, device="cpu", batch_size=2, impl="hf", kernels="torch",
                                    cuda_graphs="false", flavour="x")
    assert "ignoring unknown model args ['flavour']" in caplog.text
    assert fast.generate_until(gen_requests(PROMPTS[:2]), disable_tqdm=True) == \
        hf.generate_until(gen_requests(PROMPTS[:2]), disable_tqdm=True)
    f32 = _family_class("mamba")(pretrained=path, device="cpu", batch_size=2, state_dtype="float32")
    assert f32.model.state_dtype == "float32" and fast.model.state_dtype == "model"


def test_a_numbered_cuda_device_becomes_current(monkeypatch):
    """``device=cuda:1``: Triton launches on the current device, not on the tensors' one, so the adapter makes the
    requested device current; a plain ``cuda`` or the CPU leaves the current device alone."""
    from jrt_eval.model_adapters import lm as lm_mod

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    lm_mod.make_current(torch.device("cuda:1"))
    lm_mod.make_current(torch.device("cuda"))
    lm_mod.make_current(torch.device("cpu"))
    assert calls == [torch.device("cuda:1")]
