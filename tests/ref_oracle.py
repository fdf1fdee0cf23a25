"""An independent, step-by-step restatement of the paper harness's prompts and cut (reference-tasks.md
§3 and §4.2), used as an oracle: it follows the spec's wording literally (mutating a copy of the record,
the REF strip chains spelled out call by call) and shares no code with jrt_eval."""
import re


def _cap(key):
    return key[0].upper() + key[1:]


def swde_default(doc):
    doc = dict(doc)
    while doc["text"].find("Summary of information above...") >= 0:
        doc["text"] = doc["text"].split("Summary of information above...")[0]
    q = doc["key"] + ":"
    while doc["text"].lower().endswith(q.lower()):
        doc["text"] = doc["text"][: -len(q)]
    out = doc["text"].strip("\n").strip().strip("\n").strip().strip(".") + "."
    return out + " " + _cap(doc["key"]) + ":"


def swde_twice(doc):
    doc = dict(doc)
    while doc["text"].find("Summary of information above...") >= 0:
        doc["text"] = doc["text"].split("Summary of information above...")[0]
    q = doc["key"] + ":"
    while doc["text"].lower().endswith(q.lower()):
        doc["text"] = doc["text"][: -len(q)]
    question = _cap(doc["key"]) + ":"
    out = doc["text"].strip("\n").strip(".").strip().strip("\n").strip()
    if not out.endswith("."):
        out += "."
    return f"Information about {question.strip(':')}. " + out + "\n" + out + " " + question


def _fda_body(doc):
    doc = dict(doc)
    q = doc["key"] + ":"
    while doc["text"].lower().endswith(q.lower()):
        doc["text"] = doc["text"][: -len(q)]
    doc["text"] = doc["text"].strip("\n").strip(".")
    out = doc["text"]
    if not out.endswith("."):
        out += "."
    return out


def fda_default(doc):
    return _fda_body(doc) + " " + _cap(doc["key"]) + ":"


def fda_twice(doc):
    out = _fda_body(doc)
    question = _cap(doc["key"]) + ":"
    return f"Information about {question.strip(':')}. " + out + "\n" + out + " " + question


def squad_default(doc):
    return doc["text"].strip()


def squad_twice(doc):
    return doc["question"] + " " + doc["context"].split("Question:")[0] + "\n" + doc["text"].strip()


def _tqa_context(doc):
    context = re.sub(r"\[PAR\]|\[DOC\]|\[TLE\]", "", doc["context"].strip())
    question = doc["question"].strip()
    while context.lower().endswith(question.lower()):
        context = context[: -len(question)]
    return context


def triviaqa_default(doc):
    return _tqa_context(doc).strip().strip(".") + ". " + doc["question"].strip()


def triviaqa_twice(doc):
    out = _tqa_context(doc).strip().strip(".").strip() + "."
    out += "\n" + out + " " + doc["question"].strip()
    return doc["orig_question"] + " " + out


def nq_default(doc):
    context = doc["context"].strip()
    question = doc["question"].strip()
    if context.endswith(question):
        context = context[: -len(question)]
    return context.strip().strip(".") + ". " + doc["question"].strip()


def _qa_twice(doc):
    context = doc["context"].strip()
    question = doc["question"].strip()
    while context.lower().endswith(question.lower()):
        context = context[: -len(question)]
    out = context.strip().strip(".").strip() + "."
    out += "\n" + out + " " + question
    return f"{doc['orig_question'].strip(':')} " + out


nq_twice = _qa_twice
drop_twice = _qa_twice


def drop_default(doc):
    context = doc["context"].strip()
    question = doc["question"].strip()
    while context.lower().endswith(question.lower()):
        context = context[: -len(question)]
    return context.strip().strip(".") + ". " + question


PROMPTS = {
    ("swde", "default"): swde_default, ("swde", "twice"): swde_twice,
    ("fda", "default"): fda_default, ("fda", "twice"): fda_twice,
    ("squad", "default"): squad_default, ("squad", "twice"): squad_twice,
    ("triviaqa", "default"): triviaqa_default, ("triviaqa", "twice"): triviaqa_twice,
    ("nq", "default"): nq_default, ("nq", "twice"): nq_twice,
    ("drop", "default"): drop_default, ("drop", "twice"): drop_twice,
}


def cut(doc, tokenizer, decode, context_length=1000, answer_length=50, context_key="context", answer_key=()):
    """§4.2 step by step. ``decode(ids)`` must decode like transformers 4.42.3. Returns the cut record or
    None (dropped)."""
    desired = context_length - answer_length
    context = doc[context_key].strip()
    doc_tokens = tokenizer([context])["input_ids"][0]
    answer_pos = -1
    for key in answer_key:
        answer = doc[key]
        if type(answer) == list:  # noqa: E721 (as in the spec: only lists)
            answer = answer[0]
        if answer == "" or len(answer) <= 1:
            return None
        m = re.compile(re.escape(answer), re.IGNORECASE).search(context)
        if m:
            if answer_pos == -1 or answer_pos > m.start():
                answer_pos = m.start()
    if answer_pos < 0 and "alt_answers" in doc:
        for answer in doc["alt_answers"]:
            m = re.compile(re.escape(answer), re.IGNORECASE).search(context)
            if m:
                if answer_pos == -1 or answer_pos > m.start():
                    answer_pos = m.start()
            if answer_pos >= 0:
                break
    if len(answer_key) == 0:
        answer_pos = 0
    short_tokens = tokenizer([context[:answer_pos]])["input_ids"][0]
    answer_tok_pos = len(short_tokens)
    if answer_pos == -1 and "tok_pos" in doc and len(short_tokens) > desired:
        answer_tok_pos = doc["tok_pos"]
    half = desired // 2
    start = max(0, answer_tok_pos - half)
    end = min(len(doc_tokens), answer_tok_pos + (desired - (answer_tok_pos - start)))
    new = dict(doc)
    new[context_key] = decode(doc_tokens[start:end])
    return new
