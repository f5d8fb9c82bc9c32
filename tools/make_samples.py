"""Rebuild the small real task samples shipped in `hyperformer/assets/samples/` (and their PROVENANCE.md).

Usage: python tools/make_samples.py [SHARED_DATA_DIR]   (default: ../shared/data beside the repository)

Every task gets `train.jsonl` (<= 200 rows), `validation.jsonl` and `test.jsonl` (<= 100 rows each), with the hub's
columns, drawn without replacement with numpy `default_rng(SEED)`. When two sample splits come from the same source
file they are disjoint slices of one permutation. Sources are the raw files documented in the shared PROVENANCE.md;
where a complete official split is not available there, the closest real rows are used and the table says so.
"""
from __future__ import annotations

import json, os, sys, tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hyperformer.data import read_local, task_features, _label_id  # noqa: E402
from hyperformer.tasks import TASKS, get_task  # noqa: E402

SEED = 2021
N = {"train": 200, "validation": 100, "test": 100}
OUT = ROOT / "hyperformer" / "assets" / "samples"


def split_rows(task, split, data):
    ds = read_local(task, split, data)
    return ds.to_list()


def glue_pretrain(task, path):
    "PowerfulPromptFT `glue_pretrain` json: {i: {text_a, text_b, label}} -> hub rows (idx = key)."
    a, b = {"qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence")}[task]
    t = get_task(task)
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    return [{a: r["text_a"], b: r["text_b"], "label": _label_id(t, r["label"]), "idx": int(k)} for k, r in d.items()]


def jsonl(path):
    return [json.loads(l) for l in Path(path).read_text(encoding="utf-8").split("\n") if l.strip()]


def yelp_kshot(data):
    rows, seen = [], set()
    for f in sorted((data / "YelpPolarity" / "kshot_rlprompt").glob("*/*.tsv")):
        for line in f.read_text(encoding="utf-8").splitlines()[1:]:
            text, label = line.rsplit("\t", 1)
            if text not in seen: seen.add(text); rows.append({"text": text, "label": int(label)})
    return rows


def sources(data):
    "task -> (split -> source key, source key -> (callable giving rows, description))."
    loc = lambda t, s: (lambda: split_rows(t, s, data))
    TVT = {"train": "train", "validation": "eval", "test": "eval"}
    S = {}
    for t, d in [("cola", "CoLA"), ("sst2", "SST-2"), ("stsb", "STS-B"), ("rte", "RTE")]:
        S[t] = (TVT, {"train": (loc(t, "train"), f"{d}/train.tsv"), "eval": (loc(t, "validation"), f"{d}/dev.tsv")})
    S["mrpc"] = ({"train": "train", "validation": "validation", "test": "test"},
                 {"train": (loc("mrpc", "train"), "MRPC/train.tsv"), "validation": (loc("mrpc", "validation"), "MRPC/dev.tsv"),
                  "test": (loc("mrpc", "test"), "MRPC/msr_paraphrase_test.txt")})
    S["qqp"] = (TVT, {"train": (lambda: glue_pretrain("qqp", data / "QQP/glue_pretrain/train.json"), "QQP/glue_pretrain/train.json (GLUE train rows)"),
                      "eval": (lambda: glue_pretrain("qqp", data / "QQP/glue_pretrain/dev.json"), "QQP/glue_pretrain/dev.json (GLUE *train* rows: no QQP dev file available)")})
    S["mnli"] = (TVT, {"train": (lambda: glue_pretrain("mnli", data / "MNLI/glue_pretrain/train.json"), "MNLI/glue_pretrain/train.json (GLUE train rows)"),
                       "eval": (loc("mnli", "validation_matched"), "MNLI/dev_matched.jsonl (validation_matched; no mismatched file available)")})
    S["qnli"] = (TVT, {"train": (lambda: glue_pretrain("qnli", data / "QNLI/glue_pretrain/train.json"), "QNLI/glue_pretrain/train.json (GLUE train rows)"),
                       "eval": (loc("qnli", "validation"), "QNLI/dev.tsv")})
    ALL = {"train": "all", "validation": "all", "test": "all"}
    S["scitail"] = (ALL, {"all": (loc("scitail", "test"), "SciTail/test.jsonl (official *test* split, the only complete SciTail file available; parse columns empty)")})
    S["cb"] = (TVT, {"train": (loc("cb", "train"), "CB/train.jsonl"), "eval": (loc("cb", "validation"), "CB/val.jsonl")})
    S["boolq"] = (TVT, {"train": (lambda: [{k: r[k] for k in ("question", "passage", "idx")} | {"label": int(r["label"])}
                                           for f in ("fewglue_train32.jsonl", "fewglue_dev32.jsonl") for r in jsonl(data / "BoolQ" / f)],
                                  "BoolQ/fewglue_train32.jsonl + fewglue_dev32.jsonl (64 SuperGLUE train rows)"),
                        "eval": (loc("boolq", "validation"), "BoolQ/val.jsonl")})
    S["imdb"] = (TVT, {"train": (lambda: [{"text": r["text"], "label": r["label"]} for r in jsonl(data / "IMDB/train_subset_2000.jsonl")], "IMDB/train_subset_2000.jsonl"),
                       "eval": (lambda: [{"text": r["text"], "label": r["label"]} for r in jsonl(data / "IMDB/test_subset_2000.jsonl")], "IMDB/test_subset_2000.jsonl")})
    S["yelp_polarity"] = (ALL, {"all": (lambda: yelp_kshot(data), "YelpPolarity/kshot_rlprompt/*/*.tsv (original-text train rows, deduplicated)")})
    S["paws"] = ({"train": "dev", "validation": "dev", "test": "test"},
                 {"dev": (loc("paws", "validation"), "PAWS/dev.tsv (no PAWS train file available: train rows are dev rows)"),
                  "test": (loc("paws", "test"), "PAWS/test.tsv")})
    S["trec"] = (TVT, {"train": (loc("trec", "train"), "TREC/train_5500.label"), "eval": (loc("trec", "test"), "TREC/TREC_10.label")})
    return S


def draw(assign, srcs):
    "split -> (rows, description, source rows): splits sharing a source get disjoint slices of one permutation."
    rng = np.random.default_rng(SEED)
    out = {}
    for key in dict.fromkeys(assign.values()):
        fn, desc = srcs[key]
        rows = fn(); perm = rng.permutation(len(rows))
        splits = [s for s in ("train", "validation", "test") if assign[s] == key]
        want = [N[s] for s in splits]
        if sum(want) > len(rows): want = [len(rows) * w // sum(want) for w in want]
        start = 0
        for s, w in zip(splits, want):
            out[s] = ([rows[i] for i in perm[start:start + w]], desc, len(rows)); start += w
    return out


def write_atomic(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f: f.write(text)
    os.replace(tmp, path)


def main(data):
    data = Path(data)
    table = []
    for task, (assign, srcs) in sources(data).items():
        cols = [c for c, _ in TASKS[task].columns]
        feats = task_features(task)
        got = draw(assign, srcs)
        for split in ("train", "validation", "test"):
            rows, desc, n_src = got[split]
            rows = [feats.encode_example({c: r.get(c, -1) for c in cols}) for r in rows]
            write_atomic(OUT / task / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            table.append(f"| {task} | {split} | {len(rows)} | `{desc}` ({n_src} rows) |")
    write_atomic(OUT.parent / "PROVENANCE.md", PROVENANCE.format(seed=SEED, table="\n".join(table)))


PROVENANCE = """# Shipped task samples

Small real samples of the 15 tasks, for the `smoke` profile and the tests (no network, no data folder needed).
Built by `tools/make_samples.py DATA_DIR` from the raw task files of the project's data folder (its own
PROVENANCE.md names the public source repository, commit and checksum of every file). Rows keep the hub's columns
(`hyperformer.data.task_features`), read by `hyperformer.data.read_local` the same way as the full files.

How drawn: numpy `default_rng({seed})` permutation of each source file, rows taken without replacement; when two sample
splits come from the same file they are disjoint slices of one permutation. Sizes: up to 200 train, 100 validation,
100 test rows. These are *samples*: the split protocols (`paper`/`reference`) are not applied to them, and some
splits come from a different official split than their name (the source column says which): QQP eval rows are GLUE
train rows; MNLI eval rows are validation_matched; QNLI/MNLI/QQP train rows come from a reformatted train subset;
SciTail rows all come from its test split; PAWS train rows come from its dev split; Yelp rows all come from train.
Licences: as stated per dataset in that folder's PROVENANCE.md (research use; several have no explicit licence).

| task | split | rows | source file (rows in source) |
|---|---|---:|---|
{table}
"""

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
