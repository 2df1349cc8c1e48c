"""Bucket ids equal the reference implementation's tables; the iRPE spec parses and refuses."""

import pytest
import torch
from naive_irpe import bucket as naive_bucket

from detr_irpe.core.rpe_spec import GRAMMAR, RPESpec, RPESpecError
from detr_irpe.models.irpe import bucket_ids, cached_index


def test_bucket_ids_equal_the_reference_tables_for_every_case(irpe_bucket_cases):
    cases = irpe_bucket_cases
    assert len(cases) == 80
    for case in cases:
        method, key = case["method"], "index"
        if method.startswith("cross_"):
            method, key = "cross", method.split("_")[1]
        spec = RPESpec(ratio=case["ratio"], method=method)
        ids = bucket_ids(spec, case["height"], case["width"])[key]
        expected = torch.tensor(case["bucket_ids"])
        assert torch.equal(ids, expected), (case["method"], case["ratio"], case["height"], case["width"])
        assert spec.num_buckets == case["num_buckets"]
        assert int(ids.max()) < spec.num_buckets and int(ids.min()) >= 0


def test_naive_test_buckets_also_equal_the_reference_tables(irpe_bucket_cases):
    # the naive attention of the other tests relies on this pure-Python bucket function
    for case in irpe_bucket_cases:
        method = case["method"]
        part = None
        if method.startswith("cross_"):
            method, part = "cross", 0 if method == "cross_rows" else 1
        L, W = case["height"] * case["width"], case["width"]
        got = [[naive_bucket(method, case["ratio"], i, j, W) for j in range(L)] for i in range(L)]
        if part is not None:
            got = [[b[part] for b in row] for row in got]
        assert got == case["bucket_ids"], case["method"]


def test_cross_index_is_the_rows_cols_product_space():
    spec = RPESpec.parse("rpe-2.0-cross-ctx-1-k")
    ids = bucket_ids(spec, 6, 7)
    assert torch.equal(ids["index"], ids["rows"] * 9 + ids["cols"])
    assert spec.num_buckets == 9 and spec.num_index_buckets == 81


@pytest.mark.parametrize("ratio,buckets", [(1.9, 49), (2.0, 81), (2.5, 121), (3.0, 169)])
def test_product_bucket_counts(ratio, buckets):
    assert RPESpec(ratio=ratio).num_buckets == buckets


def test_index_cache_returns_the_same_tensor_per_shape():
    spec = RPESpec()
    a = cached_index(spec, 5, 6, torch.device("cpu"))
    assert a is cached_index(spec, 5, 6, torch.device("cpu"))
    assert a.shape == (30, 30)


@pytest.mark.parametrize("text,spec", [
    ("rpe-2.0-product-ctx-1-k", RPESpec(2.0, "product", "ctx", True, "k")),
    ("rpe-1.9-euc-bias-0-qk", RPESpec(1.9, "euc", "bias", False, "qk")),
    ("rpe-3-cross-ctx-1-vkq", RPESpec(3.0, "cross", "ctx", True, "qkv")),
    ("rpe-2.5-quant-contextual-0-v", RPESpec(2.5, "quant", "ctx", False, "v")),
])
def test_reference_strings_parse_to_typed_specs(text, spec):
    assert RPESpec.parse(text) == spec
    assert RPESpec.parse(str(spec)) == spec


def test_empty_string_means_no_irpe():
    assert RPESpec.parse("") is None


@pytest.mark.parametrize("text,word", [
    ("rpe-2.0-product-bias-1-v", "bias mode"),
    ("rpe-2.0-product-bias-1-kv", "bias mode"),
    ("rpe-2.0-manhattan-ctx-1-k", "unknown iRPE method"),
    ("rpe-0-product-ctx-1-k", "ratio"),
    ("rpe--1-product-ctx-1-k", "invalid iRPE"),
    ("rpe-2.0-product-ctx-2-k", "shared_head"),
    ("rpe-2.0-product-ctx-1-x", "rpe_on"),
    ("rpe-2.0-product-ctx-1-kk", "rpe_on"),
    ("rpe-2.0-product-ctx-1", "invalid iRPE string"),
    ("irpe-2.0-product-ctx-1-k", "invalid iRPE string"),
    ("rpe-2.0-product-attn-1-k", "unknown iRPE mode"),
])
def test_invalid_strings_are_refused_with_the_grammar(text, word):
    with pytest.raises(RPESpecError) as err:
        RPESpec.parse(text)
    msg = str(err.value)
    assert word in msg and GRAMMAR in msg and "\n" not in msg


def test_invalid_typed_fields_are_refused():
    with pytest.raises(RPESpecError, match="ratio"):
        RPESpec(ratio=-1.0)
    with pytest.raises(RPESpecError, match="bias mode"):
        RPESpec(mode="bias", rpe_on="qkv")
    with pytest.raises(RPESpecError, match="rpe_on"):
        RPESpec(rpe_on="")
