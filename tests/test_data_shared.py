"""Data pipeline checks against the real raw files in ../shared/data (skipped when absent) and process-level checks.

The folder is found beside the repository (`<repo>/../shared/data`) or where HYPERFORMER_SHARED_DATA points.
"""
import re
import time
from pathlib import Path

import pytest

from hyperformer.data import (DataUnavailableError, MalformedRowError, load_sample, load_splits, load_task_split,
                              read_local, split_indices, SAMPLE_SPLITS, generation_length, preprocess, Seq2SeqCollator)
from hyperformer.tasks import TASKS

from shared_data import shared_data_dir

REPO = Path(__file__).resolve().parent.parent
SHARED = shared_data_dir() or REPO.parent / "shared" / "data"  # one rule for where the tests find the real data
_no_shared = pytest.mark.skipif(shared_data_dir() is None,
                                reason=f"real task data not found at {SHARED} (set HYPERFORMER_SHARED_DATA)")


def needs_shared(test):
    "Skip `test` without the real task data, and mark it `needs_data` (`pytest -m 'not needs_data'` leaves it out)."
    return pytest.mark.needs_data(_no_shared(test))

# file in ../shared/data -> (task, source split) for every complete split listed in its PROVENANCE.md
COMPLETE = {"CoLA/train.tsv": ("cola", "train"), "CoLA/dev.tsv": ("cola", "validation"),
            "SST-2/train.tsv": ("sst2", "train"), "SST-2/dev.tsv": ("sst2", "validation"),
            "MRPC/train.tsv": ("mrpc", "train"), "MRPC/dev.tsv": ("mrpc", "validation"),
            "MRPC/msr_paraphrase_test.txt": ("mrpc", "test"),
            "STS-B/train.tsv": ("stsb", "train"), "STS-B/dev.tsv": ("stsb", "validation"),
            "MNLI/dev_matched.jsonl": ("mnli", "validation_matched"), "QNLI/dev.tsv": ("qnli", "validation"),
            "RTE/train.tsv": ("rte", "train"), "RTE/dev.tsv": ("rte", "validation"),
            "SciTail/test.jsonl": ("scitail", "test"), "CB/train.jsonl": ("cb", "train"), "CB/val.jsonl": ("cb", "validation"),
            "BoolQ/val.jsonl": ("boolq", "validation"), "PAWS/dev.tsv": ("paws", "validation"),
            "PAWS/test.tsv": ("paws", "test"), "TREC/train_5500.label": ("trec", "train"), "TREC/TREC_10.label": ("trec", "test")}
NOT_SPLITS = {"MRPC/msr_paraphrase_train.txt", "MRPC/dev_ids.tsv"}  # MRPC source files the hub builds train/dev from


def provenance_complete():
    "file -> N for every `yes (N)` row of the shared PROVENANCE.md."
    out = {}
    for line in (SHARED / "PROVENANCE.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([^`]+)` \|.*\| yes \((\d+)\) \|", line)
        if m: out[m.group(1)] = int(m.group(2))
    return out


@needs_shared
def test_every_complete_split_is_covered():
    listed = provenance_complete()
    assert listed, "no `yes (N)` rows parsed from PROVENANCE.md"
    assert set(listed) - NOT_SPLITS == set(COMPLETE), "PROVENANCE.md complete splits changed; update COMPLETE"


@needs_shared
@pytest.mark.parametrize("file", sorted(COMPLETE))
def test_official_sizes(file):
    task, split = COMPLETE[file]
    want = provenance_complete()[file]
    ds = read_local(task, split, SHARED)
    assert len(ds) == want == TASKS[task].official_sizes[split]
    assert ds.column_names == [c for c, _ in TASKS[task].columns]
    for row in ds.select(range(0, len(ds), max(1, len(ds) // 50))):  # every row renders to a valid target
        assert TASKS[task].target(row) in TASKS[task].label_strings


@needs_shared
def test_label_distributions_match_provenance():
    assert sorted(read_local("cola", "train", SHARED)["label"]).count(0) == 2528
    assert sum(read_local("sst2", "train", SHARED)["label"]) == 37569
    assert sum(read_local("mrpc", "test", SHARED)["label"]) == 1147
    trec = read_local("trec", "train", SHARED)
    assert [trec["coarse_label"].count(i) for i in range(6)] == [86, 1250, 1162, 1223, 835, 896]  # ABBR ENTY DESC HUM LOC NUM
    assert read_local("scitail", "test", SHARED)["gold_label"].count("entailment") == 842
    assert read_local("cb", "train", SHARED)["label"].count(2) == 16  # neutral


REFERENCE = {"cola": (8550, 520, 521), "mrpc": (3667, 203, 203), "rte": (2489, 137, 138), "stsb": (5748, 749, 749)}


@needs_shared
@pytest.mark.parametrize("task", sorted(REFERENCE))
def test_reference_sizes_and_paper_disjointness(task):
    ref = load_splits(task, "reference", data_seed=42, data_dir=SHARED)
    assert tuple(len(ref[r]) for r in ("train", "validation", "test")) == REFERENCE[task]
    pap = load_splits(task, "paper", data_seed=42, data_dir=SHARED)
    roles = split_indices(task, "paper", {s: len(read_local(task, s, SHARED)) for s in ("train", "validation")})
    keys = {r: {(src, int(i)) for i in idx} for r, (src, idx) in roles.items()}
    assert not (keys["train"] & keys["validation"] or keys["train"] & keys["test"] or keys["validation"] & keys["test"])
    assert not set(pap["validation"]["idx"]) & set(pap["test"]["idx"])
    assert len(pap["validation"]) + len(pap["test"]) == TASKS[task].official_sizes["validation"]


@needs_shared
def test_samples_are_real_rows():
    for task, split, source in [("cola", "train", "train"), ("rte", "validation", "validation"), ("trec", "test", "test"),
                                ("cb", "train", "train"), ("paws", "test", "test")]:
        full = read_local(task, split if task != "paws" else source, SHARED).to_list()
        keyed = {tuple(sorted((k, str(v)) for k, v in r.items() if k != "idx")) for r in full}
        for row in load_sample(task, split).to_list():
            assert tuple(sorted((k, str(v)) for k, v in row.items() if k != "idx")) in keyed, (task, split, row)


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1"); monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(DataUnavailableError, match="Point data_dir at a folder"):
        load_task_split("cola", "train")
    assert time.time() - start < 30


def test_malformed_rows_name_file_and_line(tmp_path):
    (tmp_path / "TREC").mkdir(); (tmp_path / "PAWS").mkdir(); (tmp_path / "CB").mkdir()
    (tmp_path / "TREC" / "TREC_10.label").write_bytes(b"HUM:ind Who ?\nXYZ:abc What ?\n")
    with pytest.raises(MalformedRowError, match=r"TREC_10.label, line 2"):
        read_local("trec", "test", tmp_path)
    (tmp_path / "PAWS" / "dev.tsv").write_text("1\ta\tb\t0\r\n2\ta\tb\r\n")
    with pytest.raises(MalformedRowError, match=r"dev.tsv, line 2"):
        read_local("paws", "validation", tmp_path)
    (tmp_path / "CB" / "val.jsonl").write_text('{"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 0}\n{"premise": 1}\n')
    with pytest.raises(MalformedRowError, match=r"val.jsonl, line 2"):
        read_local("cb", "validation", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"BoolQ/train.jsonl"):
        read_local("boolq", "train", tmp_path)


def test_every_sample_tokenises_and_collates():
    from transformers import ByT5Tokenizer
    tok = ByT5Tokenizer()
    batch = []
    for i, task in enumerate(TASKS):
        for split in SAMPLE_SPLITS:
            ds = load_sample(task, split)
            assert all(TASKS[task].target(r) in TASKS[task].label_strings for r in ds)
        enc = preprocess(load_sample(task, "validation").select(range(2)), task, tok, task_id=i, add_task_prefix=True)
        batch += list(enc)
        assert generation_length(task, tok) == (4 if task == "stsb" else 2)
    out = Seq2SeqCollator(tok)(batch)
    assert out["task_ids"].tolist() == [i for i in range(len(TASKS)) for _ in range(2)]


@needs_shared
def test_large_task_protocols_on_sst2():
    ref = load_splits("sst2", "reference", data_seed=42, data_dir=SHARED)
    assert tuple(len(ref[r]) for r in ("train", "validation", "test")) == (67348, 999, 871)
    assert set(ref["validation"]["idx"]) <= set(ref["train"]["idx"]) | {67348}  # bug 2: validation rows are trained on
    pap = load_splits("sst2", "paper", data_seed=42, data_dir=SHARED)
    assert tuple(len(pap[r]) for r in ("train", "validation", "test")) == (66349, 1000, 872)
    assert not set(pap["train"]["idx"]) & set(pap["validation"]["idx"])  # both from GLUE train, disjoint
    with pytest.raises(FileNotFoundError, match=r"QNLI/train.tsv or .*QNLI/glue_pretrain/train.json"):
        load_splits("qnli", "paper", data_dir=SHARED / "no-such-folder")


@needs_shared
def test_glue_subsets_stand_in_for_missing_train_files():
    "QNLI, QQP, MNLI: the 8,999-row glue_pretrain sample is the train source; the paper protocol holds 1,000 out."
    sizes = {t: {s: len(v) for s, v in load_splits(t, data_dir=SHARED).items()} for t in ("qnli", "qqp", "mnli")}
    assert sizes["qnli"] == {"train": 7999, "validation": 1000, "test": 5463}
    assert sizes["mnli"] == {"train": 7999, "validation": 1000, "test": 9815}
    assert sizes["qqp"] == {"train": 7999, "validation": 1000, "test": 1000}
    qqp = load_splits("qqp", data_dir=SHARED)
    assert not {(r["question1"], r["question2"]) for r in qqp["train"]} & {(r["question1"], r["question2"]) for r in qqp["test"]}
