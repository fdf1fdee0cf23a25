"""The ``contains`` metric of the paper's harness (reference-tasks.md §2.2).

A prediction scores 1 if any gold label occurs in it as a literal, case-insensitive substring. The
prediction is the generated text cut before its first newline; labels are used raw (not stripped).
The task score is the mean over scored records.
"""
from __future__ import annotations

import re
from typing import Iterable


def contains(prediction: str, labels: Iterable[str]) -> int:
    labels = list(labels)
    if not labels:
        raise ValueError("contains: a record has no gold labels")
    return max(int(re.search(re.escape(label), prediction, flags=re.IGNORECASE) is not None) for label in labels)


def first_line(text: str) -> str:
    return text.split("\n")[0]


def process_results(doc: dict, results: list) -> dict:
    """lm-eval hook: ``results[0]`` is the generated continuation of the task's one request."""
    return {"contains": contains(first_line(results[0]), doc["jrt_labels"])}
