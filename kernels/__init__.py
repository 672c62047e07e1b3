"""Fused Triton kernels for archbench, one kernel per module, each beside its torch reference.

    kernels.rms_norm      rms_norm(x, weight, eps)                   RMSNorm forward + backward
    kernels.conv_bn_relu  fold_bn(...), conv_bn_act(x, w, b, ...)    inference conv + folded BN + activation
    kernels.attention     attention(q, k, v, causal, scale)          FlashAttention-2 forward + backward

Every public function runs its Triton kernel on CUDA tensors or under TRITON_INTERPRET=1 and otherwise falls
back to its torch reference (see kernels/_common.py). Importing this package imports nothing heavy: import the
submodule you need.
"""
