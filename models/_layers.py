"""Layers shared by the zoo, each with a ``fused`` switch.

``fused=False`` is plain torch. ``fused=True`` calls the kernels in ``kernels/``, imported lazily inside
``forward`` so that ``models`` never imports ``kernels`` (or triton) unless a fused model actually runs:

    ConvBNAct  -> kernels.conv_bn_relu.fold_bn / conv_bn_act   (eval mode, groups == 1 only)
    RMSNorm    -> kernels.rms_norm.rms_norm
    attention  -> kernels.attention.attention

A fused and an unfused layer have the same parameters, buffers and state_dict keys, so weights load either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("relu", "relu6", None)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never going more than 10% below ``v``.

    This is torchvision's ``_make_divisible`` (from the TF MobileNet code); CNN widths go through it so that
    ``width=0.5`` gives hardware-friendly channel counts and ``width=1.0`` leaves 8-aligned counts unchanged.
    """
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # rounding down must not remove more than 10% of the channels
        new_v += divisor
    return new_v


def _pair_or_int(t: tuple[int, ...]) -> int | tuple[int, ...]:
    # Conv2d stores stride/padding/dilation as tuples; hand the kernel a plain int when it is square.
    return t[0] if all(v == t[0] for v in t) else t


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation in {"relu", "relu6", None}.

    x: (B, C_in, H, W) -> (B, C_out, H_out, W_out); padding defaults to "same" for odd kernels at stride 1.

    fused=True, eval mode and groups == 1: BN is folded into the conv in fp32 (``fold_bn``) and the conv, bias
    and activation run as one kernel (``conv_bn_act``). The folded weights are cached while grad is off and
    refreshed whenever a parameter or running statistic changes (tracked through tensor versions). Training
    mode (batch statistics) and grouped/depthwise convs always take the plain path.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        act: str | None = "relu",
        fused: bool = False,
    ) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; known: {', '.join(map(str, ACTIVATIONS))}")
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv2d(
            in_ch,
            out_ch,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_ch)
        self.act_name = act
        self.fused = fused
        self._fold_cache: tuple[tuple[tuple[int, int], ...], Tensor, Tensor] | None = None

    def _act(self, x: Tensor) -> Tensor:
        if self.act_name == "relu":
            return F.relu(x)
        if self.act_name == "relu6":
            return F.relu6(x)
        return x

    def _folded_weights(self) -> tuple[Tensor, Tensor]:
        from archbench.kernels.conv_bn_relu import fold_bn

        bn = self.bn
        tensors = (self.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        if torch.is_grad_enabled():  # keep the fold in the autograd graph; never serve a stale cached copy
            return fold_bn(*tensors, bn.eps)
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._fold_cache is None or self._fold_cache[0] != key:
            w, b = fold_bn(*tensors, bn.eps)
            self._fold_cache = (key, w, b)
        return self._fold_cache[1], self._fold_cache[2]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H_out, W_out)."""
        if self.fused and not self.training and self.conv.groups == 1:
            from archbench.kernels.conv_bn_relu import conv_bn_act

            w, b = self._folded_weights()
            return conv_bn_act(
                x,
                w,
                b,
                stride=_pair_or_int(self.conv.stride),
                padding=_pair_or_int(self.conv.padding),  # type: ignore[arg-type]
                dilation=_pair_or_int(self.conv.dilation),
                act=self.act_name,
            )
        return self._act(self.bn(self.conv(x)))


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2, -1) + eps) * weight.

    x: (..., dim) -> (..., dim). The statistic is computed in fp32 and cast back, as in LLaMA.
    """

    def __init__(self, dim: int, eps: float = 1e-5, fused: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., dim) -> (..., dim)."""
        if self.fused:
            from archbench.kernels.rms_norm import rms_norm

            return rms_norm(x, self.weight, self.eps)
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, fused: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(d) [+ causal mask]) v.

    q, k, v: (B, H, N, d) -> (B, H, N, d). Plain path: ``F.scaled_dot_product_attention``;
    fused path: ``kernels.attention.attention(q, k, v, causal=causal)``.
    """
    if fused:
        from archbench.kernels.attention import attention as fused_attention

        return fused_attention(q, k, v, causal=causal)
    # (B, H, N, d) @ (B, H, d, N) -> (B, H, N, N); softmax; @ (B, H, N, d) -> (B, H, N, d)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
