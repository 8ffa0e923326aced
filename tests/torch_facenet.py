"""Test helper: an independent PyTorch Inception-ResNet-v1, written for the parity tests.

Built from facenet-pytorch's published architecture (with its module names, so that its
``state_dict()`` has the keys of ``20180402-114759-vggface2.pt``), NCHW, with the same
width/repeat knobs as the Keras ``FaceNet``. Only the tests import this; the library never
imports torch outside the importers.
"""

from __future__ import annotations

import torch
from torch import nn


def _w(c: int, mult: float) -> int:
    return int(c) if mult == 1.0 else max(4, int(round(c * mult)))


def _pad(kernel):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return (kh // 2, kw // 2)


class ConvBnRelu(nn.Module):
    """Module names ``conv`` / ``bn`` as in facenet-pytorch's BasicConv2d."""

    def __init__(self, cin, cout, kernel, stride=1, same=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride,
                              padding=_pad(kernel) if same else 0, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _branch(cin, spec):
    """spec: list of (cout, kernel, stride, same). One conv -> bare module, else Sequential."""
    mods = []
    for cout, kernel, stride, same in spec:
        mods.append(ConvBnRelu(cin, cout, kernel, stride, same))
        cin = cout
    return (mods[0] if len(mods) == 1 else nn.Sequential(*mods)), cin


class Residual(nn.Module):
    def __init__(self, channels, specs, scale, relu=True):
        super().__init__()
        total = 0
        for b, spec in enumerate(specs):
            mod, cout = _branch(channels, spec)
            setattr(self, f"branch{b}", mod)
            total += cout
        self.n_branches = len(specs)
        self.conv2d = nn.Conv2d(total, channels, 1, bias=True)
        self.scale, self.relu = scale, relu

    def forward(self, x):
        cat = torch.cat([getattr(self, f"branch{b}")(x) for b in range(self.n_branches)], 1)
        y = x + self.scale * self.conv2d(cat)
        return torch.relu(y) if self.relu else y


class Reduction(nn.Module):
    def __init__(self, channels, specs):
        super().__init__()
        self.out_channels = channels
        for b, spec in enumerate(specs):
            mod, cout = _branch(channels, spec)
            setattr(self, f"branch{b}", mod)
            self.out_channels += cout
        self.n_branches = len(specs)
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        outs = [getattr(self, f"branch{b}")(x) for b in range(self.n_branches)]
        return torch.cat(outs + [self.pool(x)], 1)


def _a_specs(m):
    c = _w(32, m)
    return [[(c, 1, 1, False)], [(c, 1, 1, False), (c, 3, 1, True)],
            [(c, 1, 1, False), (c, 3, 1, True), (c, 3, 1, True)]]


def _b_specs(m):
    c = _w(128, m)
    return [[(c, 1, 1, False)], [(c, 1, 1, False), (c, (1, 7), 1, True), (c, (7, 1), 1, True)]]


def _c_specs(m):
    c = _w(192, m)
    return [[(c, 1, 1, False)], [(c, 1, 1, False), (c, (1, 3), 1, True), (c, (3, 1), 1, True)]]


class TorchInceptionResnetV1(nn.Module):
    def __init__(self, num_classes=None, embedding_dim=512, width_multiplier=1.0,
                 repeats=(5, 10, 5), dropout=0.6):
        super().__init__()
        m = width_multiplier
        self.conv2d_1a = ConvBnRelu(3, _w(32, m), 3, 2)
        self.conv2d_2a = ConvBnRelu(_w(32, m), _w(32, m), 3)
        self.conv2d_2b = ConvBnRelu(_w(32, m), _w(64, m), 3, same=True)
        self.maxpool_3a = nn.MaxPool2d(3, 2)
        self.conv2d_3b = ConvBnRelu(_w(64, m), _w(80, m), 1)
        self.conv2d_4a = ConvBnRelu(_w(80, m), _w(192, m), 3)
        self.conv2d_4b = ConvBnRelu(_w(192, m), _w(256, m), 3, 2)
        c = _w(256, m)
        self.repeat_1 = nn.Sequential(*[Residual(c, _a_specs(m), 0.17) for _ in range(repeats[0])])
        self.mixed_6a = Reduction(c, [[(_w(384, m), 3, 2, False)],
                                      [(_w(192, m), 1, 1, False), (_w(192, m), 3, 1, True),
                                       (_w(256, m), 3, 2, False)]])
        c = self.mixed_6a.out_channels
        self.repeat_2 = nn.Sequential(*[Residual(c, _b_specs(m), 0.10) for _ in range(repeats[1])])
        self.mixed_7a = Reduction(c, [[(_w(256, m), 1, 1, False), (_w(384, m), 3, 2, False)],
                                      [(_w(256, m), 1, 1, False), (_w(256, m), 3, 2, False)],
                                      [(_w(256, m), 1, 1, False), (_w(256, m), 3, 1, True),
                                       (_w(256, m), 3, 2, False)]])
        c = self.mixed_7a.out_channels
        self.repeat_3 = nn.Sequential(*[Residual(c, _c_specs(m), 0.20) for _ in range(repeats[2])])
        self.block8 = Residual(c, _c_specs(m), 1.0, relu=False)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(c, embedding_dim, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_dim, eps=1e-3, momentum=0.1)
        self.logits = nn.Linear(embedding_dim, num_classes) if num_classes else None

    def hidden_states(self, x):
        """[repeat_1, repeat_2, repeat_3, embedding, logits-or-None], NCHW."""
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b",
                     "conv2d_4a", "conv2d_4b"):
            x = getattr(self, name)(x)
        r1 = self.repeat_1(x)
        r2 = self.repeat_2(self.mixed_6a(r1))
        r3 = self.repeat_3(self.mixed_7a(r2))
        pooled = self.block8(r3).mean(dim=(2, 3))
        bottleneck = self.last_bn(self.last_linear(self.dropout(pooled)))
        emb = bottleneck / bottleneck.norm(dim=1, keepdim=True).clamp_min(1e-12)
        logits = self.logits(bottleneck) if self.logits is not None else None
        return [r1, r2, r3, emb, logits]

    def forward(self, x):
        return self.hidden_states(x)[3]


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial parameters and BN running statistics (so eval-mode BN is not an identity).

    Conv weights are rescaled to keep activations O(1) through the deep residual stack."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = mod.num_features
                mod.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=g))
                mod.bias.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
                mod.num_batches_tracked.fill_(7)
            elif isinstance(mod, (nn.Conv2d, nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=g))
    return model
