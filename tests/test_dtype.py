"""`generator.dtype=auto`: made concrete per machine, and hashed as what it became."""

import pytest
import torch

from mfexp.augmenters.mosaicfusion import fingerprint
from mfexp.compose import compose
from mfexp.mosaicfusion import models
from mfexp.mosaicfusion.models import resolve_dtype, torch_dtype


@pytest.mark.parametrize("name", ["fp32", "fp16", "bf16"])
def test_explicit_dtypes_pass_through(name):
    assert resolve_dtype(name, "cpu") == name
    assert torch_dtype(name) == models.DTYPES[name]


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native):
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = "bf16" if native else "fp32"
    assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("auto", "auto") == expected
    assert torch_dtype("auto") == models.DTYPES[expected]


def test_auto_on_a_gpu_without_bf16_is_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert resolve_dtype("auto", "gpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", "auto") == "bf16"


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ValueError, match="fp32, fp16, bf16, auto"):
        torch_dtype("fp8")


def test_auto_hashes_as_the_dtype_it_became():
    auto = compose(["generator.dtype=auto"])
    assert fingerprint(auto, "bf16") == fingerprint(compose(["generator.dtype=bf16"]), "bf16")
    assert fingerprint(auto, "bf16") != fingerprint(auto, "fp32")
    assert fingerprint(compose(["generator.dtype=fp32"])) == fingerprint(compose(["generator.dtype=fp32"]), "fp32")
