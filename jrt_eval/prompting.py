"""Prompts of the six recall tasks, default and JRT-Prompt forms (reference-tasks.md §3).

Default prompts are the paper harness's ``doc_to_text``, byte for byte, including its different strip
orders per task (§9 oddities 1–4). The JRT-Prompt ("twice") form is built by one function,
``read_twice``, from a task's ``TwiceParts``; with the defaults (2 copies, released layout) it gives
the released harness's prompt exactly:

    released:  lead + " " + first + "\\n" + body [ + "\\n" + body ...] + " " + question
    literal:   body + " " + question + "\\n" + body + " " + question [...]   (the paper's (C, Q, C, Q))

``repeats=k`` generalises both to k copies of the context (k = 1: read once).

``protocol="clean"`` (opt-in) uses one cleaning rule for every task and form, removes a repeated
question case-insensitively everywhere (NQ default did it once, case-sensitively) and strips leads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SWDE_MARKER = "Summary of information above..."
TRIVIAQA_MARKERS = re.compile(r"\[PAR\]|\[DOC\]|\[TLE\]")
RELEASED = "released"
LITERAL = "literal"
LAYOUTS = (RELEASED, LITERAL)


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class TwiceParts:
    lead: str  # short question intro put first (released layout only)
    first: str  # context of the first copy (SQuAD: the uncut passage; else the same as body)
    body: str  # context of every later copy
    question: str  # what follows the last copy; "" when the body already ends with the cloze (SQuAD)


def read_twice(parts: TwiceParts, repeats: int = 2, layout: str = RELEASED) -> str:
    """The JRT-Prompt transform: the context ``repeats`` times, then the question."""
    if repeats < 1:
        raise PromptError(f"repeats must be >= 1, got {repeats}")
    tail = f" {parts.question}" if parts.question else ""
    if layout == RELEASED:
        copies = [parts.first] + [parts.body] * (repeats - 1) if repeats > 1 else [parts.body]
        return parts.lead + " " + "\n".join(copies) + tail
    if layout == LITERAL:
        return "\n".join([parts.body + tail] * repeats)
    raise PromptError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


# ---------------------------------------------------------------------------------------- helpers

def _nonempty(doc: dict, key: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not value.strip():
        raise PromptError(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def _capitalised(key: str) -> str:
    return key[0].upper() + key[1:]


def _drop_trailing(text: str, suffix: str) -> str:
    """Remove ``suffix`` from the end, case-insensitively, as often as it occurs."""
    while text.lower().endswith(suffix.lower()):
        text = text[: -len(suffix)]
    return text


def _clean_body(text: str) -> str:
    """The clean protocol's one rule: trim whitespace and dots, end with exactly one '.'."""
    return text.strip().strip(".").strip() + "."


# ---------------------------------------------------------------------------------- SWDE and FDA

def _swde_text(doc: dict) -> tuple[str, str]:
    key = _nonempty(doc, "key")
    text = doc["text"].split(SWDE_MARKER, 1)[0]  # REF loops "while marker in text": same result
    return _drop_trailing(text, key + ":"), _capitalised(key)


def swde_default(doc: dict, protocol: str = "paper") -> str:
    text, key = _swde_text(doc)
    body = _clean_body(text) if protocol == "clean" else text.strip().strip(".") + "."
    return f"{body} {key}:"


def swde_parts(doc: dict, protocol: str = "paper") -> TwiceParts:
    text, key = _swde_text(doc)
    if protocol == "clean":
        body = _clean_body(text)
    else:
        body = text.strip("\n").strip(".").strip()  # dots before whitespace: differs from the default form
        body = body if body.endswith(".") else body + "."
    lead = f"Information about {(key + ':').strip(':')}."
    return TwiceParts(lead, body, body, f"{key}:")


def _fda_body(doc: dict, protocol: str) -> tuple[str, str]:
    key = _nonempty(doc, "key")
    text = _drop_trailing(doc["text"], key + ":")
    if protocol == "clean":
        return _clean_body(text), _capitalised(key)
    body = text.strip("\n").strip(".")  # no whitespace strip: leading/trailing spaces stay (§9.1)
    return (body if body.endswith(".") else body + "."), _capitalised(key)


def fda_default(doc: dict, protocol: str = "paper") -> str:
    body, key = _fda_body(doc, protocol)
    return f"{body} {key}:"


def fda_parts(doc: dict, protocol: str = "paper") -> TwiceParts:
    body, key = _fda_body(doc, protocol)
    return TwiceParts(f"Information about {(key + ':').strip(':')}.", body, body, f"{key}:")


# ------------------------------------------------------------------------------------------ SQuAD

def squad_default(doc: dict, protocol: str = "paper") -> str:
    return _nonempty(doc, "text").strip()


def squad_parts(doc: dict, protocol: str = "paper") -> TwiceParts:
    question = _nonempty(doc, "question")
    passage = _nonempty(doc, "context").split("Question:")[0]
    body = _nonempty(doc, "text").strip()
    if protocol == "clean":
        # the loader cut ``context`` to the same window budget; one blank line never separates copies
        return TwiceParts(question.strip(), passage.strip(), body, "")
    # REF: question unstripped, first copy = the *uncut* passage, unstripped (§9.4)
    return TwiceParts(question, passage, body, "")


# ------------------------------------------------------------------------------- TriviaQA, NQ, DROP

def _qa_context(doc: dict, kind: str, protocol: str, for_twice: bool) -> tuple[str, str]:
    context = _nonempty(doc, "context").strip()
    if kind == "triviaqa":
        context = TRIVIAQA_MARKERS.sub("", context)  # after the strip: spaces around markers stay
    question = _nonempty(doc, "question").strip()
    if kind == "nq" and not for_twice and protocol != "clean":
        if context.endswith(question):  # NQ default: once and case-sensitively (§9.2)
            context = context[: -len(question)]
    else:
        context = _drop_trailing(context, question)
    return context, question


def qa_default(kind: str):
    def build(doc: dict, protocol: str = "paper") -> str:
        context, question = _qa_context(doc, kind, protocol, for_twice=False)
        if protocol == "clean":
            return f"{_clean_body(context)} {question}"
        return context.strip().strip(".") + ". " + question

    build.__name__ = f"{kind}_default"
    return build


def qa_parts(kind: str):
    def build(doc: dict, protocol: str = "paper") -> TwiceParts:
        context, question = _qa_context(doc, kind, protocol, for_twice=True)
        body = context.strip().strip(".").strip() + "."
        lead = _nonempty(doc, "orig_question")
        if protocol == "clean":
            lead = lead.strip().strip(":").strip()
        elif kind != "triviaqa":
            lead = lead.strip(":")  # NQ/DROP strip ':' only; TriviaQA keeps the question as is (§9.3)
        return TwiceParts(lead, body, body, question)

    build.__name__ = f"{kind}_parts"
    return build


DEFAULT_PROMPTS = {
    "swde": swde_default,
    "fda": fda_default,
    "squad": squad_default,
    "triviaqa": qa_default("triviaqa"),
    "nq": qa_default("nq"),
    "drop": qa_default("drop"),
}
TWICE_PARTS = {
    "swde": swde_parts,
    "fda": fda_parts,
    "squad": squad_parts,
    "triviaqa": qa_parts("triviaqa"),
    "nq": qa_parts("nq"),
    "drop": qa_parts("drop"),
}


def build_prompt(
    kind: str,
    doc: dict,
    form: str = "default",
    repeats: int = 2,
    layout: str = RELEASED,
    protocol: str = "paper",
) -> str:
    """The prompt of one (cut) record: ``form`` is "default" or "twice" (JRT-Prompt)."""
    if form == "default":
        return DEFAULT_PROMPTS[kind](doc, protocol)
    if form == "twice":
        return read_twice(TWICE_PARTS[kind](doc, protocol), repeats=repeats, layout=layout)
    raise PromptError(f"unknown form {form!r}; expected 'default' or 'twice'")
