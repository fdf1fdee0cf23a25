"""The contains metric: literal (not regex) matching, case-insensitive, any of several labels."""
import pytest

from jrt_eval.metrics import contains, first_line, process_results


@pytest.mark.parametrize("pred,labels,score", [
    ("Sam Raimi", ["sam raimi"], 1),                    # case-insensitive
    (" directed by SAM RAIMI.", ["Sam Raimi"], 1),       # substring
    ("Sam  Raimi", ["Sam Raimi"], 0),                   # no whitespace normalisation
    ("PG13 (for violence)", ["PG13 (for violence)"], 1),  # regex metacharacters are literal
    ("PG13 for violence", ["PG13 (for violence)"], 0),
    ("costs $3.50 each", ["$3.50"], 1),
    ("costs $3550 each", ["$3.50"], 0),                   # "." is not a wildcard
    ("a+b", ["a+b"], 1), ("aab", ["a+b"], 0),
    ("[x]", ["[x]"], 1), ("x", ["[x]"], 0),
    ("c:\\path", ["c:\\path"], 1),
    ("the answer", ["nothing", "ANSWER"], 1),            # any label
    ("the answer", ["nothing", "else"], 0),
    ("anything", [""], 1),                                # an empty label matches everything (as in REF)
    ("", ["x"], 0),
    ("Rontgen", [" Rontgen"], 0),                         # labels are not stripped
])
def test_contains(pred, labels, score):
    assert contains(pred, labels) == score


def test_no_labels_is_an_error():
    with pytest.raises(ValueError):
        contains("x", [])


def test_process_results_scores_the_first_line_only():
    doc = {"jrt_labels": ["Paris", "paris, France"]}
    assert process_results(doc, [" Paris\nLondon"]) == {"contains": 1}
    assert process_results(doc, [" London\nParis"]) == {"contains": 0}
    assert first_line("a\nb") == "a"
