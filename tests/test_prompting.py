"""Prompts of every task in both forms: the spec's worked examples, the bundled samples (real text where
a raw source exists), and randomised records with the whitespace/dot/case quirks real records have, all
against an independent restatement of the reference harness (tests/ref_oracle.py)."""
import random

import pytest
import ref_oracle

from jrt_eval.prompting import (
    LITERAL,
    PromptError,
    TwiceParts,
    build_prompt,
    read_twice,
)
from jrt_eval.specs import DATASETS

SWDE_DOC = {"doc_id": "0484-year", "file_name": "0484.htm", "key": "year", "value": "1983",
            "text": "The Evil Dead details. Director: Sam Raimi\nYear: 1983\nRun Time: 85 minutes\n\n"
                    "Summary of information above...\nyear:"}
FDA_DOC = {"doc_id": "K172333-applicant", "file_name": "K172333.txt", "key": "applicant",
           "value": "Siemens Healthcare Diagnostics",
           "text": "510(k) SUMMARY A. 510(k) Number: K172333 E. Applicant: Siemens Healthcare Diagnostics "
                   "F. Names: INNOVANCE\napplicant:"}
SQUAD_DOC = {"text": "Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina "
                     "Panthers. The NFL team that represented the AFC at Super Bowl 50 was the",
             "value": "Denver Broncos", "question": "Which NFL team represented the AFC at Super Bowl 50?",
             "context": "Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina "
                        "Panthers.\nQuestion: Which NFL team represented the AFC at Super Bowl 50?\nAnswer:"}
TQA_DOC = {"doc_id": "tc_123", "context": "[DOC] [TLE] 81 years since the first inflight movie [PAR] These were "
                                          "shown on this date in 1929 aboard a Ford Trimotor.",
           "question": "The first in-flight movie was shown on an internal flight in the USA in",
           "orig_question": "In what year was the first in flight movie shown on an internal flight in the USA?",
           "answers": ["1929"]}
NQ_DOC = {"context": "List of Nobel laureates in Physics ... The first Nobel Prize in Physics was awarded to "
                     "Wilhelm Conrad Rontgen, of Germany ...",
          "question": "The first Nobel Prize in Physics was awarded to",
          "orig_question": "who got the first nobel prize in physics?", "answers": ["Wilhelm Conrad Rontgen"],
          "tok_pos": 512}
DROP_DOC = {"context": "Oakland would get the early lead as JaMarcus Russell completed a 20-yard touchdown pass "
                       "to Chaz Schilens.",
            "question": "The first touchdown of the game was scored by",
            "orig_question": "Who scored the first touchdown of the game?", "answers": ["Chaz Schilens"]}


# ------------------------------------------------------------------ the spec's worked examples (§3)

def test_swde_examples():
    body = "The Evil Dead details. Director: Sam Raimi\nYear: 1983\nRun Time: 85 minutes."
    assert build_prompt("swde", SWDE_DOC, "default") == body + " Year:"
    assert build_prompt("swde", SWDE_DOC, "twice") == f"Information about Year. {body}\n{body} Year:"


def test_fda_examples():
    body = ("510(k) SUMMARY A. 510(k) Number: K172333 E. Applicant: Siemens Healthcare Diagnostics "
            "F. Names: INNOVANCE.")
    assert build_prompt("fda", FDA_DOC, "default") == body + " Applicant:"
    assert build_prompt("fda", FDA_DOC, "twice") == f"Information about Applicant. {body}\n{body} Applicant:"


def test_squad_examples():
    assert build_prompt("squad", SQUAD_DOC, "default") == SQUAD_DOC["text"]
    passage = ("Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina "
               "Panthers.\n")
    expected = f"{SQUAD_DOC['question']} {passage}\n{SQUAD_DOC['text']}"  # blank line between the copies
    assert build_prompt("squad", SQUAD_DOC, "twice") == expected


def test_triviaqa_examples():
    # markers are removed after the strip: their surrounding spaces stay
    body = "  81 years since the first inflight movie  These were shown on this date in 1929 aboard a Ford Trimotor"
    assert build_prompt("triviaqa", TQA_DOC, "default") == body.strip() + ". " + TQA_DOC["question"]
    twice = build_prompt("triviaqa", TQA_DOC, "twice")
    assert twice == (f"{TQA_DOC['orig_question']} {body.strip()}.\n{body.strip()}. {TQA_DOC['question']}")


def test_nq_and_drop_examples():
    twice = build_prompt("drop", DROP_DOC, "twice")
    ctx = DROP_DOC["context"]
    assert twice == f"Who scored the first touchdown of the game? {ctx}\n{ctx} {DROP_DOC['question']}"
    assert build_prompt("drop", DROP_DOC, "default") == ctx[:-1] + ". " + DROP_DOC["question"]
    nq = build_prompt("nq", NQ_DOC, "default")
    # dots stripped, then ". " appended: the space before the stripped "..." stays ("Germany . The")
    assert nq == NQ_DOC["context"].rstrip(".") + ". " + NQ_DOC["question"]
    assert "of Germany . The first" in nq


# ----------------------------------------------------------------------- against the oracle

ALL_FORMS = [(kind, form) for kind in ("swde", "fda", "squad", "triviaqa", "nq", "drop") for form in ("default", "twice")]
EXAMPLES = {"swde": SWDE_DOC, "fda": FDA_DOC, "squad": SQUAD_DOC, "triviaqa": TQA_DOC, "nq": NQ_DOC, "drop": DROP_DOC}


@pytest.mark.parametrize("kind,form", ALL_FORMS)
def test_bundled_samples_match_oracle(kind, form, bundled_records):
    checked = 0
    for hub_id, records in bundled_records.items():
        spec = next(s for s in DATASETS.values() if s.hub_path == hub_id)
        if spec.kind != kind:
            continue
        for rec in records:
            assert build_prompt(kind, rec, form) == ref_oracle.PROMPTS[kind, form](rec)
            checked += 1
    assert checked >= 2


def _mutations(rng, doc, kind):
    """Perturb the fields a prompt reads the way real records vary (whitespace, dots, case, markers)."""
    doc = dict(doc)
    field = "text" if kind in ("swde", "fda", "squad") else "context"
    pads = ["", " ", "\n", " \n", "\n\n", ".", "..", " .", ". ", "\ufeff ", "\t", ".\n"]
    text = doc[field]
    text = rng.choice(pads) + text + rng.choice(pads)
    if kind in ("swde", "fda") and rng.random() < 0.5:
        suffix = rng.choice([doc["key"], doc["key"].upper(), doc["key"].title()]) + ":"
        text = text + rng.choice(["", "\n", " "]) + suffix * rng.randint(1, 2)
    if kind in ("triviaqa", "nq", "drop") and rng.random() < 0.5:
        q = doc["question"]
        text = text + rng.choice([" ", "", "\n"]) + rng.choice([q, q.upper(), q.lower()]) * rng.randint(1, 2)
    if kind == "triviaqa" and rng.random() < 0.5:
        text = rng.choice(["[DOC] ", "[TLE] ", "[PAR] "]) + text + rng.choice(["", " [PAR]", "[PAR]."])
    doc[field] = text
    for key in ("question", "orig_question"):
        if key in doc and rng.random() < 0.5:
            doc[key] = rng.choice(["", " ", ":", "\n"]) + doc[key] + rng.choice(["", " ", ":", "::", " \n"])
    return doc


@pytest.mark.parametrize("kind,form", ALL_FORMS)
def test_randomised_records_match_oracle(kind, form):
    rng = random.Random(f"{kind}-{form}")
    for _ in range(300):
        doc = _mutations(rng, EXAMPLES[kind], kind)
        assert build_prompt(kind, doc, form) == ref_oracle.PROMPTS[kind, form](doc), doc


def test_quirks_are_reproduced():
    # NQ default removes a trailing question once and case-sensitively; NQ twice repeatedly, any case
    doc = dict(NQ_DOC, context=NQ_DOC["context"] + " " + NQ_DOC["question"].upper())
    assert NQ_DOC["question"].upper() in build_prompt("nq", doc, "default")
    assert NQ_DOC["question"].upper() not in build_prompt("nq", doc, "twice")
    # FDA keeps a leading space from a mid-document window; SWDE default strips it
    assert build_prompt("fda", dict(FDA_DOC, text=" " + FDA_DOC["text"]), "default").startswith(" 510(k)")
    # TriviaQA twice keeps orig_question as is; NQ/DROP strip ':' from it
    assert build_prompt("triviaqa", dict(TQA_DOC, orig_question="Q:"), "twice").startswith("Q: ")
    assert build_prompt("drop", dict(DROP_DOC, orig_question="Q:"), "twice").startswith("Q ")


# ----------------------------------------------------------------------- read_twice generalisation

PARTS = TwiceParts(lead="Lead.", first="first copy.", body="body copy.", question="Q:")


def test_read_twice_layouts_and_repeats():
    assert read_twice(PARTS) == "Lead. first copy.\nbody copy. Q:"
    assert read_twice(PARTS, repeats=3) == "Lead. first copy.\nbody copy.\nbody copy. Q:"
    assert read_twice(PARTS, repeats=1) == "Lead. body copy. Q:"
    assert read_twice(PARTS, layout=LITERAL) == "body copy. Q:\nbody copy. Q:"
    assert read_twice(PARTS, repeats=3, layout=LITERAL).count("body copy. Q:") == 3
    assert read_twice(TwiceParts("L", "p", "text ending in the cloze", ""), layout=LITERAL) == (
        "text ending in the cloze\ntext ending in the cloze")
    with pytest.raises(PromptError):
        read_twice(PARTS, repeats=0)
    with pytest.raises(PromptError):
        read_twice(PARTS, layout="sideways")


CLOZE_END = {"swde": "Year:", "fda": "Applicant:", "squad": "was the", "triviaqa": "USA in",
             "nq": "awarded to", "drop": "scored by"}


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_literal_layout_is_context_question_context_question(kind):
    s = build_prompt(kind, EXAMPLES[kind], "twice", layout=LITERAL, repeats=2)
    unit = s[: (len(s) - 1) // 2]
    assert s == unit + "\n" + unit  # (C, Q, C, Q): no lead, the cloze after each copy
    assert unit.endswith(CLOZE_END[kind])
    assert not s.startswith(("Information about", EXAMPLES[kind].get("orig_question", "\0")))


def test_clean_protocol_differs_only_where_documented():
    # one cleaning rule: whitespace and dots trimmed on every task, NQ default case-insensitive
    doc = dict(FDA_DOC, text="  " + FDA_DOC["text"])
    assert build_prompt("fda", doc, "default", protocol="clean").startswith("510(k)")
    doc = dict(NQ_DOC, context=NQ_DOC["context"] + " " + NQ_DOC["question"].upper())
    assert NQ_DOC["question"].upper() not in build_prompt("nq", doc, "default", protocol="clean")
    lead = build_prompt("triviaqa", dict(TQA_DOC, orig_question=" Q: "), "twice", protocol="clean")
    assert lead.startswith("Q ")
    # where the paper form is already clean, both agree
    assert build_prompt("drop", DROP_DOC, "twice", protocol="clean") == build_prompt("drop", DROP_DOC, "twice")


@pytest.mark.parametrize("field,value", [("key", ""), ("key", "  ")])
def test_empty_attribute_name_is_an_error(field, value):
    with pytest.raises(PromptError):
        build_prompt("swde", dict(SWDE_DOC, **{field: value}), "default")


def test_empty_question_is_an_error_not_an_infinite_loop():
    # REF loops forever ("".endswith("") is always true); we refuse the record
    with pytest.raises(PromptError):
        build_prompt("drop", dict(DROP_DOC, question=""), "twice")
    with pytest.raises(PromptError):
        build_prompt("nq", dict(NQ_DOC, question=" "), "default")
