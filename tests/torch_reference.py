"""PyTorch stand-ins for the reference SF2F modules, for parity tests.

Test helper only: the library never imports it. The modules reproduce the reference's
computation (encoders, fuser, decoders, discriminators; NCL/NCHW) and, above all, its
state-dict key names, so that a checkpoint saved from them has the layout the official code
writes. The architecture is the reference's; the code is this project's own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


# --- voice encoder ----------------------------------------------------------------------------

class ConvBnRelu1d(nn.Module):
    """Reference CNN1DBlock: keys model.0 (conv, no bias), model.1 (BN)."""

    def __init__(self, cin, cout, kernel, stride, padding):
        super().__init__()
        self.model = nn.Sequential(nn.Conv1d(cin, cout, kernel, stride, padding, bias=False),
                                   nn.BatchNorm1d(cout), nn.ReLU())

    def forward(self, x):
        return self.model(x)


class InceptionBlock1d(nn.Module):
    """Reference Inception1DBlock: branches conv_k{2,3,5,7}, k2 trimmed, concat [k2,k3,k5,k7]."""

    def __init__(self, cin, width):
        super().__init__()
        self.conv_k2 = ConvBnRelu1d(cin, width, 2, 2, 1)
        self.conv_k3 = ConvBnRelu1d(cin, width, 3, 2, 1)
        self.conv_k5 = ConvBnRelu1d(cin, width, 5, 2, 2)
        self.conv_k7 = ConvBnRelu1d(cin, width, 7, 2, 3)

    def forward(self, x):
        k2, k3, k5, k7 = (self.conv_k2(x), self.conv_k3(x), self.conv_k5(x), self.conv_k7(x))
        if k2.shape[-1] > k3.shape[-1]:
            k2 = k2[..., :k3.shape[-1]]
        return torch.cat([k2, k3, k5, k7], dim=1)


class GeneralAttention(nn.Module):
    """'general' attention with output layer and no tanh; keys linear_in, linear_out."""

    def __init__(self, dim):
        super().__init__()
        self.linear_in = nn.Linear(dim, dim, bias=False)
        self.linear_out = nn.Linear(2 * dim, dim, bias=False)

    def forward(self, embeddings):
        query = self.linear_in(embeddings)
        weights = torch.softmax(torch.bmm(query, embeddings.transpose(1, 2)), dim=-1)
        mix = torch.bmm(weights, embeddings)
        return self.linear_out(torch.cat([mix, query], dim=-1))


class AttentionFuserRef(nn.Module):
    """Reference AttentionFuserV1: keys attention.linear_in / attention.linear_out."""

    def __init__(self, dim):
        super().__init__()
        self.attention = GeneralAttention(dim)

    def forward(self, embeddings):  # [B, N, D] -> [B, D]
        return self.attention(embeddings).mean(dim=1)


class VoiceEncoderRef(nn.Module):
    """Reference V2F1DCNN (inception or plain), optional fuser; input (B,40,L) or (B,N,40,L)."""

    def __init__(self, inception=True, channels=(256, 384, 576, 864), dim=512, cin=40,
                 fuser=False, add_noise=False):
        super().__init__()
        layers = []
        if inception:
            previous = cin
            for width in channels:
                layers.append(InceptionBlock1d(previous, width // 4))
                previous = width
        else:
            previous = cin
            for width in channels:
                layers += [nn.Conv1d(previous, width, 3, 2, 1, bias=False),
                           nn.BatchNorm1d(width), nn.ReLU()]
                previous = width
        layers.append(nn.Conv1d(previous, dim, 3, 2, 1, bias=True))
        self.model = nn.Sequential(*layers)
        self.dim = dim
        self.add_noise = add_noise
        if fuser:
            self.attn_fuser = AttentionFuserRef(dim)

    def forward(self, x):
        segments = x.dim() == 4
        if segments:
            batch, count = x.shape[:2]
            x = x.reshape(batch * count, *x.shape[2:])
        embeddings = F.normalize(self.model(x).mean(dim=2), dim=1)
        if self.add_noise:
            embeddings = F.normalize(embeddings + 0.05 * torch.randn_like(embeddings), dim=1)
        if segments:
            embeddings = embeddings.view(batch, count, self.dim)
            embeddings = F.normalize(self.attn_fuser(embeddings), dim=1)
        return embeddings


# --- face decoders ----------------------------------------------------------------------------

class ChannelGLU(nn.Module):
    def forward(self, x):
        half = x.shape[1] // 2
        return x[:, :half] * torch.sigmoid(x[:, half:])


def up_block(cin, cout):
    """Reference upBlock: keys .1 (conv), .2 (BN)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(cin, 2 * cout, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(2 * cout), ChannelGLU())


def image_head(channels):
    """Reference gnet: keys .0 (conv3), .2 (conv1)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.01),
                         nn.Conv2d(channels, 3, 1))


class UpsamplingDecoderRef(nn.Module):
    """Reference FaceGanDecoder (multires=False) or FaceGanDecoder_v2 (multires=True)."""

    def __init__(self, dim=512, multires=False):
        super().__init__()
        self.dim = dim
        self.multires = multires
        self.fc = nn.Sequential(nn.Linear(dim, dim * 32, bias=False), nn.BatchNorm1d(dim * 32),
                                ChannelGLU())
        blocks = nn.Sequential(*[up_block(dim // 2 ** i, dim // 2 ** (i + 1)) for i in range(4)])
        if multires:
            self.up_low_layers = blocks
            self.gnet_low = image_head(dim // 16)
            self.up_mid_layer = up_block(dim // 16, dim // 32)
            self.gnet_mid = image_head(dim // 32)
        else:
            self.up_layers = blocks
            self.gnet = image_head(dim // 16)

    def forward(self, embeddings):
        x = self.fc(embeddings.reshape(-1, self.dim)).view(embeddings.shape[0], -1, 4, 4)
        if not self.multires:
            return self.gnet(self.up_layers(x))
        features = self.up_low_layers(x)
        return self.gnet_low(features), self.gnet_mid(self.up_mid_layer(features))


class DeconvBlock(nn.Module):
    """Reference DeConv2DBLK without normalization: keys model.0 (ConvTranspose2d)."""

    def __init__(self, cin, cout, kernel, stride, padding, relu):
        super().__init__()
        layers = [nn.ConvTranspose2d(cin, cout, kernel, stride, padding, bias=True)]
        if relu:
            layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class DeconvDecoderRef(nn.Module):
    """Reference V2FDecoder: keys model.{0..5}.model.0."""

    def __init__(self, dim=512, channels=(1024, 512, 256, 128, 64)):
        super().__init__()
        blocks = [DeconvBlock(dim, channels[0], 4, 1, 0, True)]
        for cin, cout in zip(channels[:-1], channels[1:]):
            blocks.append(DeconvBlock(cin, cout, 4, 2, 1, True))
        blocks.append(DeconvBlock(channels[-1], 3, 1, 1, 0, False))
        self.model = nn.Sequential(*blocks)
        self.dim = dim

    def forward(self, embeddings):
        return self.model(embeddings.reshape(-1, self.dim, 1, 1))


class GeneratorRef(nn.Module):
    """Reference EncoderDecoder: keys encoder.*, decoder.*; returns (images, embedding)."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x):
        embedding = self.encoder(x)
        return self.decoder(embedding), embedding


# --- discriminators ---------------------------------------------------------------------------

def conv_stack(arch, normalization="batch", slope=0.1, padding="valid", cin=3):
    """Reference build_cnn for C layers: norm + LeakyReLU(slope) before every conv but the first.
    slope=None means no activation."""
    layers = []
    for position, token in enumerate(arch.split(",")):
        values = [int(v) for v in token[1:].split("-")]
        kernel, cout = values[:2]
        stride = values[2] if len(values) > 2 else 1
        pad = values[3] if len(values) > 3 else (0 if padding == "valid" else (kernel - 1) // 2)
        if position > 0:
            if normalization == "batch":
                layers.append(nn.BatchNorm2d(cin))
            if slope is not None:
                layers.append(nn.LeakyReLU(slope))
        layers.append(nn.Conv2d(cin, cout, kernel, stride, pad, bias=True))
        cin = cout
    return nn.Sequential(*layers), cin


class PatchDiscriminatorRef(nn.Module):
    """Keys cnn.<i>, classifier."""

    def __init__(self, arch, normalization="batch", slope=0.1):
        super().__init__()
        self.cnn, channels = conv_stack(arch, normalization, slope)
        self.classifier = nn.Conv2d(channels, 1, 1)

    def forward(self, images):
        return self.classifier(self.cnn(images))


class SpatialMean(nn.Module):
    def forward(self, x):
        return x.flatten(2).mean(dim=2)


class AcDiscriminatorRef(nn.Module):
    """Keys cnn.0.<i>, cnn.2, real_classifier, id_classifier; returns (real, identity) logits."""

    def __init__(self, arch, num_id, normalization="batch", slope=0.1):
        super().__init__()
        stack, channels = conv_stack(arch, normalization, slope)
        self.cnn = nn.Sequential(stack, SpatialMean(), nn.Linear(channels, 1024))
        self.real_classifier = nn.Linear(1024, 1)
        self.id_classifier = nn.Linear(1024, num_id)

    def forward(self, images):
        features = self.cnn(images)
        return self.real_classifier(features), self.id_classifier(features)


# --- test utilities ---------------------------------------------------------------------------

def randomize_batch_norms(module, generator: torch.Generator):
    """Non-trivial BN affine parameters (so gamma/beta swaps would show)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.weight.uniform_(0.5, 1.5, generator=generator)
                layer.bias.uniform_(-0.3, 0.3, generator=generator)


def warm_up_batch_norms(module, inputs_fn, steps=3, momentum=0.5):
    """A few train-mode forwards so the running statistics move well away from (0, 1)."""
    saved = {}
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            saved[layer] = layer.momentum
            layer.momentum = momentum
    module.train()
    with torch.no_grad():
        for _ in range(steps):
            module(inputs_fn())
    for layer, value in saved.items():
        layer.momentum = value
    module.eval()
