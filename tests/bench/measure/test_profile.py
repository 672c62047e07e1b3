"""Static profile: MAC handles against closed forms, published architectures, the FlopCounterMode cross-check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archbench.bench.measure.profile import count_macs, count_params, profile_module
from archbench.bench.measure.sources import resolve


class _Attn(nn.Module):
    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("b, h, nq, nk, d, dv", [(1, 1, 5, 5, 8, 8), (2, 3, 7, 11, 16, 4), (3, 2, 123, 123, 32, 32)])
def test_sdpa_macs(b: int, h: int, nq: int, nk: int, d: int, dv: int, causal: bool) -> None:
    if causal and nq != nk:
        pytest.skip("causal with nq != nk is not a zoo case")
    q, k, v = torch.randn(b, h, nq, d), torch.randn(b, h, nk, d), torch.randn(b, h, nk, dv)
    # QK^T: (b,h,nq,d)@(b,h,d,nk) and AV: (b,h,nq,nk)@(b,h,nk,dv); the full square also when causal.
    assert count_macs(_Attn(causal), (q, k, v)) == b * h * nq * nk * (d + dv)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("inp, hid, layers, bidir, batch_first", [(7, 5, 1, False, True), (3, 8, 2, True, False)])
def test_rnn_macs(cell: type, inp: int, hid: int, layers: int, bidir: bool, batch_first: bool) -> None:
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cell]
    m = cell(inp, hid, num_layers=layers, bidirectional=bidir, batch_first=batch_first)
    t, b = 9, 2
    x = torch.randn(b, t, inp) if batch_first else torch.randn(t, b, inp)
    dirs = 2 if bidir else 1
    expected = 0
    for layer in range(layers):
        i = inp if layer == 0 else hid * dirs
        expected += dirs * t * b * gates * hid * (i + hid)
    assert count_macs(m, (x,)) == expected


@pytest.mark.parametrize(
    "ref, params, macs",
    [
        # torchvision's published numbers: ResNet-18 11,689,512 params / 1.814 GMACs ("1.81 GFLOPS"),
        # ResNet-50 25,557,032 / 4.089 G, MobileNetV2 3,504,872 / 300 M (Sandler et al., table 3: 300M MAdds).
        ("archbench.models.resnet:resnet18", 11_689_512, 1.814e9),
        ("archbench.models.resnet:resnet50", 25_557_032, 4.089e9),
        ("archbench.models.mobilenet:mobilenetv2", 3_504_872, 300e6),
    ],
)
def test_published_architectures_by_import_path(ref: str, params: int, macs: float) -> None:
    src = resolve(ref)
    assert src.kind == "import"
    assert count_params(src.module)[0] == params
    got = count_macs(src.module, src.example_inputs())
    assert abs(got - macs) / macs < 0.02, f"{ref}: {got:,} MACs vs published {macs:,.0f}"


def test_cross_check_agrees_for_cnn_and_names_the_attention_gap() -> None:
    src = resolve("resnet_s")
    p = profile_module(src.module, src.example_inputs(), time_ops=False)
    assert p.cross_check is not None
    assert p.cross_check.rel_diff == 0.0
    assert p.flops == 2 * p.macs == p.cross_check.flop_counter_flops
    assert "batch_norm" in {r.op for r in p.uncounted}

    src = resolve("vit_s")
    p = profile_module(src.module, src.example_inputs(), time_ops=False)
    cc = p.cross_check
    assert cc is not None and abs(cc.rel_diff) < 1e-9
    assert cc.missed_by_flop_counter["scaled_dot_product_attention"] == 2 * dict(
        (r.op, r.macs) for r in p.by_operator
    )["scaled_dot_product_attention"]


def test_uncounted_time_shares_are_fractions() -> None:
    src = resolve("resnet_s")
    p = profile_module(src.module, src.example_inputs())
    shares = [r.time_share for r in p.uncounted]
    assert shares and all(s is not None and 0.0 <= s <= 1.0 for s in shares)


def test_sizes_count_every_weight() -> None:
    src = resolve("mlp_s")
    p = profile_module(src.module, src.example_inputs(), time_ops=False)
    n_state = sum(t.numel() for t in src.module.state_dict().values())
    assert p.state_dict_bytes == 4 * n_state
    assert p.file_bytes > p.state_dict_bytes  # torch.save adds a zip container and pickled keys
