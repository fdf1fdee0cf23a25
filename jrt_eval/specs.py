"""The six recall datasets as the paper's harness reads them (reference-tasks.md §2.4, §3, §4.1).

One ``DatasetSpec`` per dataset: where it lives on the hub, which field is cut to a token window,
which fields locate the answer for the cut, where the gold labels are, and which fields each
prompt form reads. Task YAMLs name a spec by its key (``jrt_dataset: swde``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # prompt family: swde | fda | squad | triviaqa | nq | drop
    hub_path: str
    hub_name: Optional[str]
    context_key: str  # the field cut to a token window (REF --context_key)
    answer_keys: tuple  # fields searched to centre the window (REF --answer_key); () = document head
    label_key: str  # "value" (one string) or "answers" (list of strings, any may match)
    fields: tuple  # read by the default prompt (and the cut)
    twice_fields: tuple = ()  # additionally read by the JRT-Prompt form
    split: str = "validation"

    @property
    def labels_are_list(self) -> bool:
        return self.label_key == "answers"


_SWDE_FDA = dict(context_key="text", answer_keys=("key", "value"), label_key="value", fields=("text", "key", "value"))
_QA = dict(context_key="context", label_key="answers", fields=("context", "question", "answers"), twice_fields=("orig_question",))

DATASETS = {
    "swde": DatasetSpec("swde", "hazyresearch/based-swde-v2", "default", **_SWDE_FDA),
    "fda": DatasetSpec("fda", "hazyresearch/based-fda", "default", **_SWDE_FDA),
    "squad": DatasetSpec(
        "squad", "hazyresearch/based-squad", "default", context_key="text", answer_keys=("value",),
        label_key="value", fields=("text", "value"), twice_fields=("question", "context"),
    ),
    "triviaqa": DatasetSpec("triviaqa", "hazyresearch/based_triviaqa", None, answer_keys=(), **_QA),
    "nq_512": DatasetSpec("nq", "hazyresearch/based_nq_512", None, answer_keys=("answers",), **_QA),
    "nq_1024": DatasetSpec("nq", "hazyresearch/based_nq_1024", None, answer_keys=("answers",), **_QA),
    "nq_2048": DatasetSpec("nq", "hazyresearch/based_nq_2048", None, answer_keys=("answers",), **_QA),
    "drop": DatasetSpec("drop", "hazyresearch/based_drop", None, answer_keys=(), **_QA),
}

FORMS = ("default", "twice")

# Paper Table 1 column order (reference-tasks.md §8); NQ = nq_1024.
TABLE1_DATASETS = ("fda", "swde", "nq_1024", "squad", "triviaqa", "drop")


def task_name(dataset: str, form: str) -> str:
    return f"jrt_{dataset}" + ("_twice" if form == "twice" else "")


def all_task_names() -> list[str]:
    names = [task_name(d, f) for d in DATASETS for f in FORMS]
    return names + ["jrt_nq", "jrt_nq_twice"]  # aliases of nq_1024
