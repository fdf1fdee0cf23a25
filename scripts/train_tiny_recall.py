"""Train the demo's tiny Based model to copy values it has read, so the offline demo and the CI regression
check score something real.

The model is the tiny hazyresearch Based layout of ``jrt_eval.tiny`` (d 64: conv, linear attention, sliding
window), trained on CPU in minutes on synthetic attribute/value documents written with the GPT-2 tokenizer
("Director: Sam Raimi" lines, inline "Applicant: Siemens ..." sentences), in both prompt forms: the document
then ``<Key>:`` (default) and "Information about <Key>. " + document + "\\n" + document + " <Key>:" (JRT-Prompt).
The loss is on the answer tokens only. Keys and values are random tokens, so what it learns is recall by
matching (induction), not facts; it never sees the bundled sample documents.

    python scripts/train_tiny_recall.py --out jrt_eval/assets/models/tiny-based-recall [--steps 3000]

The checkpoint is written in the published format (config.json + pytorch_model.bin with the ``model.``
prefix), weights stored in float16 to keep the package small (the loader upcasts).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

from jrt_eval.model_adapters import hazy_gpt
from jrt_eval.tokenization import load_tokenizer

FILLER = ("The page lists details of the item. Further information follows below. See the notes for more. "
          "This summary was compiled from the source document. Additional data may be available. ").split(" ")


def token_pools(tok, seed):
    """Single-token words usable as keys (capitalised) and as value pieces."""
    rng = random.Random(seed)
    vocab = tok.get_vocab()
    words = [w for w in vocab if w.startswith("Ġ") and w[1:].isalpha() and 3 <= len(w) <= 12]
    caps = sorted(w[1:] for w in words if w[1].isupper())
    lower = sorted(w[1:] for w in words if w[1].islower())
    rng.shuffle(caps)
    rng.shuffle(lower)
    return caps[:3000], caps[3000:12000] + lower[:12000]


def make_example(rng, keys, values, jrt: bool):
    n = rng.randint(3, 10)
    ks = rng.sample(keys, n)
    vs = [" ".join(rng.choice(values) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    inline = rng.random() < 0.4  # FDA-like running text vs SWDE-like lines
    parts = []
    for k, v in zip(ks, vs):
        if rng.random() < 0.3:
            parts.append(" ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 12))).strip())
        parts.append(f"{k}: {v}" + ("." if inline else ""))
    doc = (" " if inline else "\n").join(parts) + ("" if inline else ".")
    target = rng.randrange(n)
    key = ks[target]
    prompt = f"Information about {key}. {doc}\n{doc} {key}:" if jrt else f"{doc} {key}:"
    return prompt, " " + vs[target] + "\n"


def batch(tok, rng, keys, values, size, device):
    rows, answer_spans = [], []
    for _ in range(size):
        prompt, answer = make_example(rng, keys, values, jrt=rng.random() < 0.5)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        rows.append(p + a)
        answer_spans.append((len(p), len(p) + len(a)))
    width = max(map(len, rows))
    ids = torch.full((size, width), 220, dtype=torch.long)
    mask = torch.zeros((size, width), dtype=torch.long)
    targets = torch.full((size, width), -100, dtype=torch.long)
    for i, (r, (s, e)) in enumerate(zip(rows, answer_spans)):
        off = width - len(r)
        ids[i, off:] = torch.tensor(r)
        mask[i, off:] = 1
        targets[i, off + s - 1: off + e - 1] = torch.tensor(r[s:e])  # position t predicts token t+1
    return ids.to(device), mask.to(device), targets.to(device)


def hidden_states(model, ids, mask):
    r, _, _ = model._run(ids, mask, False)
    return model.transformer.ln_f(r)


def train(args):
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = load_tokenizer("gpt2")
    keys, values = token_pools(tok, args.seed)
    config = hazy_gpt.tiny_config("based")
    spec = hazy_gpt.parse_config(config, "based")
    model = hazy_gpt.build_model(spec, None, config, device="meta")
    model.load_state_dict(hazy_gpt.random_weights(model, args.seed), strict=True, assign=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    start, log = time.time(), []
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        ids, mask, targets = batch(tok, rng, keys, values, args.batch, "cpu")
        h = hidden_states(model, ids, mask)
        sel = targets != -100
        logits = F.linear(h[sel], model.head_weight)
        loss = F.cross_entropy(logits, targets[sel])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == 1:
            acc = (logits.argmax(-1) == targets[sel]).float().mean().item()
            log.append({"step": step, "loss": round(loss.item(), 4), "token_acc": round(acc, 3),
                        "seconds": round(time.time() - start, 1)})
            print(json.dumps(log[-1]), flush=True)
    return model.eval(), config, log


def save(model, config, out: Path, log):
    out.mkdir(parents=True, exist_ok=True)
    sd = OrderedDict((f"model.{k}", v.detach().to(torch.float16).contiguous()) for k, v in model.state_dict().items())
    sd["model.train_metrics.num-tokens.count"] = torch.tensor(0, dtype=torch.int64)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.save(sd, out / "pytorch_model.bin")
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, config, log = train(args)
    save(model, config, args.out, log)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
