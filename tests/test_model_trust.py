"""Issue 18, model side: the 3.5.1 cross-attention bias is bidirectional; a model folder is checked before it is used;
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
