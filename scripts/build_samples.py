"""Build the bundled sample records (jrt_eval/assets/samples/) in the hub sets' exact schemas.

The processed hub sets (hazyresearch/based-*) cannot be downloaded here, so the package ships a few
records per dataset with the hub field names and types (reference-tasks.md §12). Real text is used
where a raw source exists (../shared/data: the SQuAD v2 "Normans" paragraph and questions, the DROP
passage nfl_1184, NQ-open dev questions and answers, SWDE amctv ground-truth values); page texts,
cloze statements, FDA and TriviaQA documents are written here and say so in the samples' README.
They reproduce the quirks real records have: U+FEFF and leading spaces, "\\n" between SWDE list
items, the SWDE summary block, FDA chunks starting mid-word with a capitalised or lower-case closing
key, [DOC]/[TLE]/[PAR] markers, DROP's leading space, multi-answer NQ lists with int64 tok_pos,
1-character answers (dropped by the paper's cut), answers absent from the document, and documents
longer than the paper's 950-token window.

    python scripts/build_samples.py [--shared ../shared/data] [--out jrt_eval/assets/samples]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

MARKER = "Summary of information above..."


def swde_ground_truth(shared: Path) -> dict:
    """{page: {attribute: [values]}} from the SWDE amctv ground-truth files (UTF-8 BOM, CRLF)."""
    pages: dict = {}
    for attr in ("title", "director", "genre", "mpaa_rating"):
        lines = (shared / "swde" / f"movie-amctv-{attr}.txt").read_text(encoding="utf-8-sig").splitlines()
        for line in lines[2:]:
            page, _count, *values = line.split("\t")
            pages.setdefault(page, {})[attr] = values
    return pages


# Page texts written here around the real ground-truth values (director surnames in the GT).
SWDE_PAGES = {
    "0484": dict(year="1983", director_full="Sam Raimi", runtime="85 minutes",
                 plot="Five friends travel to a cabin in the woods, where they unknowingly release flesh-possessing demons."),
    "1420": dict(year="2005", director_full="Tim Burton, Mike Johnson", runtime="77 minutes",
                 plot="A shy groom practises his wedding vows in the wrong place and finds himself married to a corpse bride."),
    "1789": dict(year="1997", director_full="Peter O'Fallon", runtime="106 minutes",
                 plot="A group of friends kidnap a retired gangster to raise a ransom, and the plan goes wrong."),
    "0033": dict(year="1994", director_full="Quentin Tarantino", runtime="154 minutes",
                 plot="The lives of two hit men, a boxer and a pair of diner bandits intertwine in tales of violence."),
    "0049": dict(year="2009", director_full="James Cameron", runtime="162 minutes",
                 plot="A paraplegic marine dispatched to the moon Pandora becomes torn between orders and a world he feels is his home."),
    "0065": dict(year="1958", director_full="Alfred Hitchcock", runtime="128 minutes",
                 plot="A retired detective with a fear of heights is hired to follow a friend's wife and becomes obsessed with her."),
}
ATTR_LABEL = {"title": "Title", "director": "Director", "genre": "Genre", "mpaa_rating": "MPAA Rating"}


def swde_page_text(gt: dict, page: str, key: str, long: bool = False) -> str:
    info, v = SWDE_PAGES[page], gt[page]
    title = v["title"][0]
    lines = [
        f"\ufeff {title} \ufeff({info['year']})",
        "Movie Details",
        f"Director: {info['director_full']}",
        f"Genre: {', '.join(v['genre'])}",
        f"MPAA Rating: \ufeff{v['mpaa_rating'][0]}",
        f"Run Time: {info['runtime']}",
        f"Year: {info['year']}",
        f"Plot Synopsis: {info['plot']}",
    ]
    if long:
        # a long page: the answer sits far past the 950-token window of the paper's cut
        lines[2:2] = [f"Review {i}: Critics discussed the pacing, the photography and the score of {title} at "
                      f"length in issue {i}, comparing it with other films released in {info['year']}."
                      for i in range(1, 46)]
    others = [a for a in ("title", "genre", "mpaa_rating", "director") if a != key][:3]
    summary = "\n".join(f"{a}: {', '.join(v[a])}" for a in others)
    return "\n".join(lines) + f"\n\n{MARKER}\n{summary}\n{key}:"


def build_swde(shared: Path) -> list:
    gt = swde_ground_truth(shared)
    rows = [("0484", "director"), ("0484", "mpaa_rating"), ("1420", "title"), ("1789", "director"),
            ("0033", "genre"), ("0049", "mpaa_rating"), ("0065", "director")]
    out = []
    for page, key in rows:
        out.append({
            "doc_id": f"{page}-{key}",
            "file_name": f"{page}.htm",
            "key": key,
            "value": ", ".join(gt[page][key]) if key != "director" else gt[page][key][0],
            "text": swde_page_text(gt, page, key, long=(page == "0065")),
        })
    return out


FDA_RECORDS = [
    # (doc_id, key, value, text): constructed 510(k)-style chunks, not real submissions
    ("K172333-applicant", "applicant", "Siemens Healthcare Diagnostics",
     " 510(k) SUMMARY A. 510(k) Number: K172333 B. Purpose for Submission: New device C. Measurand: "
     "Activated partial thromboplastin time E. Applicant: Siemens Healthcare Diagnostics F. Proprietary and "
     "Established Names: INNOVANCE APTT reagent\napplicant:"),
    ("K153137-purpose_for_submission", "purpose for submission", "Modification of a cleared device",
     "ance characteristics of the assay are summarized below. 510(k) SUMMARY OF SAFETY AND EFFECTIVENESS "
     "Purpose for Submission: Modification of a cleared device to add a new sample type. Measurand: "
     "Troponin I. Type of Test: Quantitative chemiluminescent immunoassay.\nPurpose for submission:"),
    ("K161218-device_trade_name", "device trade name", "GlucoTrack Pro (Model GT-2)",
     "DECISION SUMMARY. Device Trade Name: GlucoTrack Pro (Model GT-2). Regulation Number: 21 CFR 862.1345. "
     "Classification: Class II. Panel: Clinical Chemistry (75). Indications for use: quantitative "
     "measurement of glucose in fresh capillary whole blood. ...\ndevice trade name:"),
    ("K140077-predicate_device_name", "predicate device name", "Architect HbA1c assay",
     "Intended Use: for the quantitative measurement of glycated hemoglobin. Predicate Device Name: "
     "Architect HbA1c assay. Predicate 510(k) Number: K092333. The candidate and the predicate share the "
     "same measurand and sample type. \nPredicate Device Name:"),
    ("K150321-classification", "classification", "I",
     "Regulation Section: 21 CFR 866.3110. Classification: I. Product Code: GMZ. Panel: Microbiology.\n"
     "classification:"),
]


def fda_long_text() -> str:
    filler = " ".join(
        f"Section {i}: The precision study tested {i + 2} lots of reagent over 20 days on three instruments, "
        f"with two runs per day and duplicate measurements per run, for a total of {80 * (i + 1)} results."
        for i in range(40)
    )
    return (f"510(k) SUBSTANTIAL EQUIVALENCE DETERMINATION DECISION SUMMARY. {filler} Applicant: Ortho-Clinical "
            "Diagnostics, Inc. Contact: Regulatory Affairs.\napplicant:")


def build_fda() -> list:
    rows = [{"doc_id": d, "file_name": d.split("-")[0] + ".txt", "key": k, "value": v, "text": t}
            for d, k, v, t in FDA_RECORDS]
    rows.append({"doc_id": "K180042-applicant", "file_name": "K180042.txt", "key": "applicant",
                 "value": "Ortho-Clinical Diagnostics, Inc.", "text": fda_long_text()})
    return rows


def build_squad(shared: Path) -> list:
    article = json.loads((shared / "squad" / "dev-v2.0.hf-dummy.json").read_text())["data"][0]
    para = article["paragraphs"][0]
    passage = para["context"]
    qas = {qa["id"]: qa for qa in para["qas"]}
    rows = []
    items = [
        # (id, question, answer, cloze written here); the first two questions are real SQuAD v2 dev ones
        ("56ddde6b9a695914005b9628", qas["56ddde6b9a695914005b9628"]["question"],
         qas["56ddde6b9a695914005b9628"]["answers"][0]["text"], "Normandy is located in the country of"),
        ("56ddde6b9a695914005b9629", qas["56ddde6b9a695914005b9629"]["question"],
         qas["56ddde6b9a695914005b9629"]["answers"][0]["text"], "The Normans were in Normandy in the"),
        ("constructed-rollo", "Who was the leader of the Norse raiders who swore fealty to King Charles III?",
         "Rollo", "The leader of the Norse raiders who swore fealty to King Charles III was"),
        ("constructed-short", "Which letter does the name of the region Normandy start with?", "N",
         "The name of the region Normandy starts with the letter"),
    ]
    for qid, question, answer, cloze in items:
        rows.append({
            "doc_id": qid,
            "text": f"{passage} {cloze}",
            "value": answer,
            "title": article["title"],
            "context": f"Title: {article['title']}\nBackground: {passage}\nQuestion: {question}\nAnswer:",
            "question": question,
        })
    return rows


TRIVIAQA_RECORDS = [
    ("tc_123", "[DOC] [TLE] 81 years since the first inflight movie [PAR] These were shown on this date in 1929 "
     "aboard a Ford Trimotor operated by Transcontinental Air Transport. [PAR] Passengers watched a newsreel "
     "and two cartoons.",
     "The first in-flight movie was shown on an internal flight in the USA in",
     "In what year was the first in flight movie shown on an internal flight in the USA?", ["1929"]),
    ("tc_456", "[DOC] [TLE] Mount Kilimanjaro [PAR] Kilimanjaro is a dormant volcano in Tanzania. Its highest "
     "summit, Uhuru Peak on the Kibo cone, rises to 5,895 metres. [PAR] The mountain is part of Kilimanjaro "
     "National Park.",
     "Mount Kilimanjaro is located in the country of", "In which country is Mount Kilimanjaro?",
     ["Tanzania", "United Republic of Tanzania"]),
    ("tc_789", "[DOC] [TLE] Penicillin [PAR] Alexander Fleming noticed in 1928 that a mould, Penicillium "
     "notatum, killed the bacteria around it.  [PAR]  Howard Florey and Ernst Chain later purified the drug.",
     "Penicillin was discovered by", "Who discovered penicillin?", ["Alexander Fleming", "Fleming"]),
]


def build_triviaqa() -> list:
    return [{"doc_id": d, "context": c, "question": q, "orig_question": o, "answers": a}
            for d, c, q, o, a in TRIVIAQA_RECORDS]


# Contexts written here for real NQ-open dev questions/answers (line numbers of NQ-open.dev.jsonl).
NQ_CONTEXTS = {
    1: ("The last time anyone was on the moon was in",
        "Apollo 17 was the final mission of NASA's Apollo program. Eugene Cernan and Harrison Schmitt spent "
        "three days on the lunar surface in the Taurus-Littrow valley. Cernan was the last person to walk on "
        "the Moon; he re-entered the lunar module on 14 December 1972 UTC, and no one has returned since."),
    2: ("The lyrics of He Ain't Heavy, He's My Brother were written by",
        "\"He Ain't Heavy, He's My Brother\" is a ballad written by Bobby Scott and Bob Russell. It was first "
        "recorded by Kelly Gordon in 1969 and became a worldwide hit for The Hollies later that year."),
    8: ("The ruler of England in 1616 was",
        "In 1616 William Shakespeare died in Stratford-upon-Avon. The English throne was then held by James I, "
        "who had also been King of Scotland as James VI since 1567 and had succeeded Elizabeth I in 1603."),
    11: ("The state located in the centre of India is",
         "Madhya Pradesh is often called the heart of India because of its central location. Its capital is "
         "Bhopal; Chhattisgarh, to its south-east, was carved out of it in the year 2000."),
}


def build_nq(shared: Path) -> list:
    lines = (shared / "nq" / "NQ-open.dev.jsonl").read_text().splitlines()
    rows = []
    for line_no, (cloze, context) in NQ_CONTEXTS.items():
        item = json.loads(lines[line_no - 1])
        rows.append({"id": f"nq-open-dev-{line_no}", "context": context, "question": cloze,
                     "answers": item["answer"], "tok_pos": context.count(" ") // 2,
                     "orig_question": item["question"]})
    # an answer absent from the document, in a long one: exercises the not-found window and tok_pos
    item = json.loads(lines[2607 - 1])
    filler = " ".join(f"Mission log entry {i}: the crew checked the guidance computer, reported the cabin "
                      f"pressure and prepared the next burn of the descent engine." for i in range(60))
    rows.append({"id": "nq-open-dev-2607", "context": "The Apollo 11 mission. " + filler,
                 "question": "The first steps on the moon in 1969 were taken by",
                 "answers": item["answer"], "tok_pos": 300, "orig_question": item["question"]})
    return rows


def build_drop(shared: Path) -> list:
    data = json.loads((shared / "drop" / "drop_dataset_dev.hf-dummy.json").read_text())
    passage = data["nfl_1184"]["passage"]  # starts with a space, as DROP passages do
    qas = data["nfl_1184"]["qa_pairs"]
    clozes = ["The first touchdown of the game was scored by", "The number of field goals Kris Brown kicked was"]
    rows = []
    for qa, cloze in zip(qas, clozes):
        spans = qa["answer"]["spans"]
        answers = spans if spans else [qa["answer"]["number"]]
        rows.append({"context": passage, "question": cloze, "orig_question": qa["question"], "answers": answers})
    return rows


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def build_all(shared: Path) -> dict:
    nq = build_nq(shared)
    return {
        "hazyresearch/based-swde-v2": build_swde(shared),
        "hazyresearch/based-fda": build_fda(),
        "hazyresearch/based-squad": build_squad(shared),
        "hazyresearch/based_triviaqa": build_triviaqa(),
        "hazyresearch/based_nq_512": nq,
        "hazyresearch/based_nq_1024": nq,
        "hazyresearch/based_nq_2048": nq,
        "hazyresearch/based_drop": build_drop(shared),
    }


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=root.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=root / "jrt_eval" / "assets" / "samples")
    args = ap.parse_args()
    for hub_id, rows in build_all(args.shared).items():
        write_jsonl(args.out / hub_id / "validation.jsonl", rows)
        print(f"{hub_id}: {len(rows)} records")


if __name__ == "__main__":
    main()
