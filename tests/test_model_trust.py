"""The model side of a trust pass: the 3.5.1 cross-attention bias is bidirectional; a model folder is checked before it is used;
bad arguments of the model API are named with their value. Each test fails on the code before the fix."""
import math

import pytest
import torch
from torch import nn

from hyperformer.config import AdapterConfig
from hyperformer.model import HyperFormerModel, add_cross_attention_bias, build_base_model, cross_attention_bias


# --- 1. the decoder cross-attention bias of transformers 3.5.1 -------------------------------------------------------

def bucket_351(i:int, j:int, buckets:int=32, max_distance:int=128) -> int:
    "transformers 3.5.1's bucket of query i, key j in its cross-attention (`is_bidirectional=True`), written from its rule."
    n = -(j - i)  # relative_position = memory_position - context_position; n = -relative_position
    half = buckets // 2  # bidirectional: num_buckets //= 2
    ret = half if n < 0 else 0  # ret += (n < 0) * num_buckets
    n = abs(n)
    exact = half // 2
    if n < exact: return ret + n
    return ret + min(half - 1, exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact)))


def bias_351(table:torch.Tensor, queries, key_length:int) -> torch.Tensor:
    "(1, heads, queries, keys) from a (buckets, heads) table, bucket by bucket."
    return torch.stack([torch.stack([table[bucket_351(i, j)] for j in range(key_length)], -1) for i in queries], -2)[None]


def test_cross_attention_buckets_follow_351_rule():
    buckets = nn.Embedding.from_pretrained(torch.arange(32.)[:, None])  # bucket b holds b
    got = cross_attention_bias(buckets, 45, 300)[0, 0]
    want = bias_351(buckets.weight, range(45), 300)[0, 0]
    assert torch.equal(got, want), (got != want).nonzero()[:5]
    assert got[0, 1] == 17 and got[40, 0] == 12  # a key after the query is in the upper half (the old rule gave 0)
    offset = cross_attention_bias(buckets, 3, 300, query_offset=42)[0, 0]  # under a KV cache: positions 42..44
    assert torch.equal(offset, want[42:])


def test_cross_attention_logits_match_351_rule_teacher_forced_and_cached():
    torch.manual_seed(0)
    base = build_base_model("t5-tiny", seed=5).eval()
    model = HyperFormerModel(base, AdapterConfig(method="hyperformer++", tasks=("rte",))).eval()
    table = add_cross_attention_bias(model.base, seed=0).weight.detach()
    ids, mask = torch.randint(2, 384, (2, 30)), torch.ones(2, 30, dtype=torch.long)
    mask[1, 24:] = 0
    attention = model.base.decoder.block[0].layer[1].EncDecAttention

    def with_oracle(decoder_input_ids):
        bias = bias_351(table, range(decoder_input_ids.shape[1]), ids.shape[1])
        give = lambda mod, args, kwargs: (args, {**kwargs, "position_bias": bias}) if kwargs.get("position_bias") is None else None
        handle = attention.register_forward_pre_hook(give, with_kwargs=True, prepend=True)
        try:
            with torch.no_grad(): return model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_input_ids, use_cache=False).logits
        finally: handle.remove()

    with torch.no_grad():
        decoder_ids = torch.randint(2, 384, (2, 18))
        ours = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=18, min_new_tokens=18, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    oracle = with_oracle(decoder_ids)
    assert (ours - oracle).abs().max() < 1e-5
    cached = torch.stack(gen.logits, 1)
    assert (cached - with_oracle(gen.sequences[:, :-1])).abs().max() < 1e-4  # the KV cache's query offset
    without = HyperFormerModel(build_base_model("t5-tiny", seed=5).eval(), AdapterConfig(method="hyperformer++", tasks=("rte",))).eval()
    without.adapters.load_state_dict(model.adapters.state_dict())
    with torch.no_grad(): stock = without(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    assert (ours - stock).abs().max() > 1e-3  # the table does act


# --- 2. a model folder is checked before it is used -----------------------------------------------------------------
# New names are reached through the module inside each test, so that on the code before the fix each test fails alone.
import json
from pathlib import Path

import hyperformer.model as hm


def bert_vocab(n:int) -> str: return "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(n - 5))]) + "\n"


def model_folder(tmp_path:Path, arch:str="t5-tiny", tokenizer:bool=True) -> Path:
    "A folder as save_pretrained writes it: a tiny random `arch` and a tokenizer of its 384 ids."
    from transformers import ByT5Tokenizer
    folder = tmp_path / arch
    build_base_model(arch, seed=0).save_pretrained(folder)
    if tokenizer and arch.startswith("t5"): ByT5Tokenizer().save_pretrained(folder)
    elif tokenizer: (folder / "vocab.txt").write_text(bert_vocab(384))
    return folder


def edit_config(folder:Path, **changes) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder


@pytest.mark.parametrize("arch", ["t5-tiny", "bert-tiny"])
def test_sound_folders_pass(tmp_path, arch):
    folder = model_folder(tmp_path, arch)
    assert hm.check_model_folder(str(folder)) == folder
    assert type(hm.load_base_model(str(folder))).__name__ in ("T5ForConditionalGeneration", "BertModel")


def test_old_bert_checkpoint_names_pass_as_transformers_reads_them(tmp_path):
    folder = model_folder(tmp_path, "bert-tiny")
    (folder / "model.safetensors").unlink()
    state = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in build_base_model("bert-tiny", seed=3).state_dict().items()}
    torch.save({**state, "cls.predictions.bias": torch.zeros(384)}, folder / "pytorch_model.bin")  # BertForPreTraining, transformers 2
    assert hm.check_model_folder(str(folder)) == folder


def test_packaged_minilm_passes():
    assert hm.check_model_folder("minilm") == hm.minilm_path()


def test_folder_without_tokenizer_files_is_refused(tmp_path):
    folder = model_folder(tmp_path, "bert-tiny", tokenizer=False)
    with pytest.raises(ValueError, match=rf"no tokenizer files in {folder} .*reads every word as unknown"):
        hm.check_model_folder(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))  # a config, no vocabulary
    with pytest.raises(ValueError, match=r"no vocabulary file of its tokenizer BertTokenizer \(one of tokenizer.json, vocab.txt\): it would have 5 tokens"):
        hm.check_model_folder(str(folder))


@pytest.mark.parametrize("size, why", [(1000, "ids 384..999 would index past the embedding"), (200, "the model embeds 184 more ids than it has")])
def test_tokenizer_of_another_size_is_refused(tmp_path, size, why):
    folder = model_folder(tmp_path, "bert-tiny")
    (folder / "vocab.txt").write_text(bert_vocab(size))
    with pytest.raises(ValueError, match=rf"the tokenizer in {folder} has {size} tokens, but config.json's vocab_size is 384: {why}"):
        hm.check_model_folder(str(folder))


def test_config_with_more_layers_than_the_weights_is_refused(tmp_path):
    folder = edit_config(model_folder(tmp_path), num_layers=3)  # today: trains with a random third encoder layer
    with pytest.raises(ValueError, match=rf"{folder / 'model.safetensors'} does not fit {folder / 'config.json'}: 8 parameter\(s\) of "
                                         r"config.json are not in the weights: encoder.block.2.layer.0.SelfAttention.q.weight"):
        hm.load_base_model(str(folder))


def test_weights_of_more_layers_than_the_config_are_refused(tmp_path):
    folder = edit_config(model_folder(tmp_path, "bert-tiny"), num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"16 tensor\(s\) in the weights have no place in config.json's model: encoder.layer.1."):
        hm.load_base_model(str(folder))


def test_weights_of_another_shape_are_refused(tmp_path):
    folder = edit_config(model_folder(tmp_path), d_ff=256)  # today: a size-mismatch traceback from transformers
    with pytest.raises(ValueError, match=r"8 tensor\(s\) have another shape: decoder.block.0.layer.2.DenseReluDense.wi.weight is "
                                         r"\[128, 64\] in the file, \[256, 64\] for config.json"):
        hm.load_base_model(str(folder))


def test_truncated_weights_are_refused_naming_the_file(tmp_path):
    folder = model_folder(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ValueError, match=rf"{weights} is not a readable safetensors file .*truncated or damaged"):
        hm.load_base_model(str(folder))
    folder = model_folder(tmp_path, "bert-tiny")
    (folder / "model.safetensors").unlink()
    torch.save({}, folder / "pytorch_model.bin")
    (folder / "pytorch_model.bin").write_bytes((folder / "pytorch_model.bin").read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{folder / 'pytorch_model.bin'} is not a readable PyTorch weights file"):
        hm.load_base_model(str(folder))


def test_empty_folder_and_missing_config_name_config_json(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"no config.json in {empty} \(the folder is empty\)"):
        hm.load_base_model(str(empty))
    with pytest.raises(ValueError, match=rf"no config.json in {empty}"):
        hm.model_family(str(empty))
    folder = model_folder(tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=rf"no config.json in {folder} \(it holds .*model.safetensors"):
        hm.load_base_model(str(folder))
    assert hm.has_local_weights(str(folder))  # a folder means its weights: checked, not replaced by a random model


def test_unsupported_model_type_names_it_and_the_supported_families(tmp_path):
    from transformers import GPT2Config, GPT2Model
    folder = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=384)).save_pretrained(folder)  # loads fine today
    for load in (hm.load_base_model, hm.check_model_folder):
        with pytest.raises(ValueError, match=r"has model_type 'gpt2', an architecture hyperformer does not adapt; it adapts T5-family "
                                             r".*BERT-layout encoders"):
            load(str(folder))


# --- 3. bad arguments of the model API are named with their value ---------------------------------------------------

TASKS = ("rte", "cola", "mnli")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HyperFormerModel(build_base_model("t5-tiny", seed=0).eval(), AdapterConfig(method="hyperformer++", tasks=TASKS)).eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return dict(input_ids=torch.randint(2, 384, (4, 9), generator=g), attention_mask=torch.ones(4, 9, dtype=torch.long),
                labels=torch.randint(2, 384, (4, 3), generator=g))


MAPPING = r"from this model's tasks \{'rte': 0, 'cola': 1, 'mnli': 2\}"


@pytest.mark.parametrize("given, shown", [(["rte", "cola", "mnli", "rte"], r"\['rte', 'cola', 'mnli', 'rte'\] holds task names"),
                                          ("rte", r"'rte' holds task names"),
                                          ("numpy", r"array\(\['rte', 'rte', 'rte', 'rte'\].* is not a tensor of task indices")])
def test_task_ids_as_strings_name_the_argument_and_the_mapping(model, batch, given, shown):
    import numpy as np
    task_ids = np.array(["rte"] * 4) if given == "numpy" else given
    with pytest.raises(ValueError, match=rf"task_ids={shown}.*task_ids must be an integer tensor of shape \(batch,\) .*{MAPPING}"):
        model(**batch, task_ids=task_ids)
    with pytest.raises(ValueError, match=rf"task_ids={shown}"):
        model.generate(batch["input_ids"], task_ids=task_ids, max_new_tokens=2)


def test_task_ids_of_another_length_than_the_batch(model, batch):
    with pytest.raises(ValueError, match=r"task_ids has 2 entries for a batch of 4 rows \(input_ids\)"):
        model(**batch, task_ids=torch.tensor([0, 1]))


def test_empty_batch_names_input_ids(model, batch):
    with pytest.raises(ValueError, match=r"input_ids has shape \(0, 9\): the batch is empty \(0 rows\)"):
        model(**{k: v[:0] for k, v in batch.items()}, task_ids=torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids has shape \(0, 9\): the batch is empty"):
        model.generate(batch["input_ids"][:0], task_ids=torch.zeros(0, dtype=torch.long), max_new_tokens=2)


@pytest.mark.parametrize("bad", [384, 10_000, -1])
def test_token_id_outside_the_vocabulary_names_input_ids_the_id_and_the_size(model, batch, bad):
    ids = batch["input_ids"].clone()
    ids[2, 5] = bad
    message = rf"input_ids holds token id {bad}, outside the model's vocabulary of 384 ids \(0..383\)"
    with pytest.raises(ValueError, match=message):
        model(input_ids=ids, labels=batch["labels"], task_ids=torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=message):
        model.generate(ids, task_ids=torch.tensor([0, 1, 2, 0]), max_new_tokens=2)


def test_token_id_outside_the_vocabulary_on_an_encoder():
    enc = HyperFormerModel(build_base_model("bert-tiny", seed=0).eval(), AdapterConfig(method="hyperformer++", tasks=("rte", "stsb")),
                           {"rte": 2, "stsb": 1}).eval()
    with pytest.raises(ValueError, match=r"input_ids holds token id 500, outside the model's vocabulary of 384 ids"):
        enc(input_ids=torch.full((2, 3), 500), task_ids=torch.tensor([0, 1]))


@pytest.mark.parametrize("task", [5, 3, -1, True, 1.0])
def test_export_static_adapter_refuses_a_task_outside_the_model(model, task):
    with pytest.raises(ValueError, match=rf"export_static_adapter: task={task!r} is out of range: give an index 0..2 or a name of "
                                         rf"this model's 3 task\(s\) \{{'rte': 0, 'cola': 1, 'mnli': 2\}}"):
        model.export_static_adapter(task)


def test_export_static_adapter_refuses_an_unknown_name_and_takes_names_and_indices(model):
    with pytest.raises(ValueError, match=r"export_static_adapter: task='qqp' is not one of this model's tasks"):
        model.export_static_adapter("qqp")
    assert model.export_static_adapter(2).adapter_config.tasks == model.export_static_adapter("mnli").adapter_config.tasks == ("mnli",)


def test_save_adapter_onto_a_file_names_the_path_and_keeps_the_file(model, tmp_path):
    taken = tmp_path / "adapter"
    taken.write_text("not ours")
    with pytest.raises(NotADirectoryError, match=rf"save_adapter: directory='{taken}': {taken} is a file, give a folder"):
        model.save_adapter(taken)
    with pytest.raises(NotADirectoryError, match=rf"{taken}, above it, is a file"):
        model.save_adapter(taken / "inside")
    assert taken.read_text() == "not ours"
    assert (model.save_adapter(tmp_path / "fresh") / "adapter_config.json").is_file()
