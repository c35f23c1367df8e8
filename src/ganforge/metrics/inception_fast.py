"""The fast inference path of the FID Inception network: the same function as torch-fidelity's
``FeatureExtractorInceptionV3``, up to float rounding (~1e-6 relative on the pool features).

Three rewrites, each exact in real arithmetic:

* every ``BasicConv2d`` (conv without bias → frozen BatchNorm → ReLU) becomes one conv whose
  weights and bias absorb the BatchNorm: w' = w·γ/√(σ²+ε), b' = β − μ·γ/√(σ²+ε);
* on CPU with oneDNN, the ReLU runs inside that conv and the weights are reordered once into
  oneDNN's blocked layout instead of on every call (what ``torch.compile``'s freezing pass does,
  without its minute-long compilation, which only pays for evaluations of many thousand images);
* the TF1-exact bilinear resize lerps along x at the input height first and then gathers rows,
  instead of gathering four full-size corner images (the same arithmetic, so the same values).

On a 2-core AMD EPYC (``scripts/benchmark.py``) this runs at ~1.8x torch-fidelity's images/s, its
convolutions at ~95% of what one core reaches on a large fp32 GEMM: what is left is arithmetic.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d


def _has_onednn_ops() -> bool:
    try:
        torch.ops.mkldnn._convolution_pointwise  # noqa: B018 (looked up to test it exists)
        torch.ops.mkldnn._reorder_convolution_weight  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available()


class FusedConvReLU(nn.Module):
    """relu(bn(conv(x))) of a frozen ``BasicConv2d`` as one convolution (see the module doc)."""

    def __init__(self, block: BasicConv2d) -> None:
        super().__init__()
        conv, bn = block.conv, block.bn
        assert conv.bias is None and not bn.training, "fuses frozen, bias-free BasicConv2d only"
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            weight = conv.weight * scale[:, None, None, None]
            bias = bn.bias - bn.running_mean * scale
        # Plain tensors, not parameters: nothing here is trained or saved.
        self.weight = weight.contiguous(memory_format=torch.channels_last)
        self.bias = bias.contiguous()
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self._onednn = self.weight.device.type == "cpu" and _has_onednn_ops()
        self._packed: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self._onednn and x.dtype == torch.float32:
            if self._packed is None:
                # The blocked layout is picked for this input shape but valid for any batch size.
                self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                    self.weight, self.padding, self.stride, self.dilation, self.groups,
                    list(x.shape),
                )  # fmt: skip
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed, self.bias, self.padding, self.stride, self.dilation,
                self.groups, "relu", [None], "",
            )  # fmt: skip
        x = F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        return F.relu_(x)


def fuse_inception(net: nn.Module) -> nn.Module:
    """A copy of torch-fidelity's network (in eval mode, on its device) with every BasicConv2d
    fused; the original is left untouched. The blocks' own forwards run unchanged."""
    fused = copy.deepcopy(net).eval()
    for module in list(fused.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, BasicConv2d):
                setattr(module, name, FusedConvReLU(child))
    return fused


def _tf1_taps(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    # torch-fidelity's resample_manually, align_corners=False: source coordinate out·(in/out) in
    # float32, its floor, the next pixel (clamped) and the fraction between them.
    grid = torch.arange(n_out, dtype=torch.float32, device=device) * torch.tensor(
        n_in / n_out, dtype=torch.float32
    )
    lo = grid.long()
    return lo, (lo + 1).clamp_max(n_in - 1), grid - lo.float()


def resize_tf1_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x(x, size, align_corners=False)``
    computed separably: lerp along x, then gather the two source rows of each output row and lerp
    along y. Every output value goes through the same float operations as there."""
    (h_out, w_out), device = size, x.device
    x_lo, x_hi, dx = _tf1_taps(x.shape[3], w_out, device)
    y_lo, y_hi, dy = _tf1_taps(x.shape[2], h_out, device)
    left, right = x.index_select(3, x_lo), x.index_select(3, x_hi)
    rows = left + (right - left) * dx.view(1, 1, 1, w_out)
    top, bottom = rows.index_select(2, y_lo), rows.index_select(2, y_hi)
    return top + (bottom - top) * dy.view(1, 1, h_out, 1)
