"""Simulated ("fake") quantization in plain torch: quantized models, calibration, size, distillation.

Two conventions (`quantize_model(..., convention=...)`), the same placement, per-channel/per-tensor split,
activation range rule and straight-through gradient; their arithmetic (the "quantface" default, and
"zero-inclusive") is racecomp.fakequant's, described there.

- Weights: per output channel (dim 0 of Conv2d and Linear weights), asymmetric min/max of the current weights, taken
  at every forward, so quantization-aware training sees its updated weights. PReLU slopes have one value per channel,
  which a per-channel grid would store exactly, so they are quantized per tensor (one range over all slopes), as
  QuantFace does.
- Activations: per tensor, asymmetric, range = running min/max over the calibration batches starting from 0 (so
  always including 0; QuantFace's exponential-moving-average update is commented out in its QuantAct, and so not
  used), then frozen. An `ActivationQuantizer` observes only while switched on by `calibrate` or `distill`; a fresh
  one refuses to run rather than quantize with an empty range, so test images can never calibrate a model silently.
  Computed in float32 and cast back to the input's dtype.

Placement by `quantize_model` (a deep copy; the float model is never changed; each target is wrapped, the wrapper
holding the original module):
- every `nn.Conv2d` weight (`QuantConv2d`) and `nn.Linear` weight (`QuantLinear`); biases stay full precision;
- every `nn.PReLU`: slope quantized per tensor (at abits for "quantface", wbits for "zero-inclusive"),
  output at abits (`QuantPReLU`);
- every ReLU / ReLU6 / LeakyReLU / GELU / SiLU module: output at abits (`QuantActivation`);
- every residual block (and UNet decoder block): its output (after the addition) at abits (`QuantBlockOutput`);
- normalization layers (BatchNorm, also timm's BatchNormAct) stay full precision, and so do the model input and the
  final output (embedding or image).
Per family this gives:
- iresnet (arcface_torch, QuantFace recipe): all convs and the fc, the stem PReLU and each block's PReLU (slope +
  output), each IBasicBlock output. iresnet50: 53 convs (stem 1 + 2 per block x 24 + 4 downsample 1x1), 1 linear,
  25 PReLUs, 24 block outputs.
- mobilefacenet (QuantFace recipe): all convs and the GDC linear, every PReLU, each residual DepthWise block output
  (the stride-2 DepthWise transitions have no shortcut and are no residual block, as in QuantFace).
- timm ResNet50: all convs, the ReLU outputs, each Bottleneck output. The Bottleneck's last ReLU (`act3`, after the
  addition) produces the block output itself, so it is quantized once, as the block output.
- timm FastViT: reparameterized first (`timm.utils.reparameterize_model`: MobileOne / RepMixer branches and their
  BatchNorms are folded into single convs with a bias, as deployed; the remaining BatchNorms stay float), then all
  convs, the attention qkv/proj linears, the GELU outputs and each RepMixerBlock / AttentionBlock output.
- EmbeddingNet: its timm encoder as above, the head's linear weight.
- UNet upscalers: the timm encoder as above; in the decoder every conv (the last one, to RGB, included), each
  DecoderBlock's inner ReLU output (`act1`) and its block output (its last ReLU, `act`, quantized once as the
  block output), and the upsampler's ReLU outputs. The bicubic path and the final residual sum stay float: the
  output image is not quantized.
Activation functions called functionally inside a forward (F.relu) are not modules and are not seen; conv/linear
subclasses (Conv2dSame, ConvTranspose2d) are refused with an error rather than left in float silently.
"""
import copy
import itertools
import math

import timm.models.fastvit
import timm.models.resnet
import timm.utils
import torch
import torch.nn.functional as F
from torch import nn

from racecomp import facenets, upscalers
from racecomp.errors import InputError
from racecomp.fakequant import fake_quantize_range, quantize_weight, straight_through
from racecomp.progress import Progress

MIN_BITS, MAX_BITS = 2, 8
CONVENTIONS = ("quantface", "zero-inclusive")  # see racecomp.fakequant; the first is the default
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU)
# Blocks whose output tensor is the last activation inside them: that activation is not wrapped on its own, the
# block output quantizer covers the same tensor.
FINAL_ACTIVATION_OF_BLOCK = {timm.models.resnet.Bottleneck: "act3", timm.models.resnet.BasicBlock: "act2",
                             upscalers.DecoderBlock: "act"}
BLOCK_TYPES = (facenets.IBasicBlock, timm.models.resnet.Bottleneck, timm.models.resnet.BasicBlock,
               timm.models.fastvit.RepMixerBlock, timm.models.fastvit.AttentionBlock, upscalers.DecoderBlock)
# Methods timm.utils.reparameterize_model looks for.
REPARAMETERIZE_METHODS = ("fuse", "reparameterize", "switch_to_deploy")


def check_bits(bits, what="bits"):
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise InputError(f"{what} must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return bits


def check_convention(convention):
    if convention not in CONVENTIONS:
        raise InputError(f"quantization convention must be one of {CONVENTIONS}, got {convention!r}")
    return convention


class ActivationQuantizer(nn.Module):
    """Per-tensor activation fake quantizer with a running min/max range (buffers `min_val`, `max_val`).

    `observing` (set by calibrate/distill, saved in the state dict with the count of observed batches): widen the
    range with each batch's min/max, then quantize with it. Not observing: the range is frozen; forwarding before any
    batch was observed is an error. The range starts at [0, 0] in both conventions; `convention` sets the grid
    arithmetic (module docstring).
    """

    def __init__(self, bits, convention="quantface"):
        super().__init__()
        self.bits = check_bits(bits, "abits")
        self.convention = check_convention(convention)
        self.register_buffer("min_val", torch.zeros(()))
        self.register_buffer("max_val", torch.zeros(()))
        self.observing = False
        self.observed_batches = 0

    def reset(self):
        self.min_val.zero_()
        self.max_val.zero_()
        self.observed_batches = 0

    def forward(self, x):
        if self.observing:
            with torch.no_grad():
                values = x.detach().float()
                torch.minimum(self.min_val, values.min(), out=self.min_val)
                torch.maximum(self.max_val, values.max(), out=self.max_val)
            self.observed_batches += 1
        elif self.observed_batches == 0:
            raise RuntimeError("activation ranges were never calibrated: run quant.calibrate(qmodel, batches) "
                               "(or quant.distill with calibrate_steps > 0) before using the quantized model")
        x_hat = fake_quantize_range(x.float(), self.min_val, self.max_val, self.bits, self.convention)
        return straight_through(x, x_hat.to(x.dtype))

    def get_extra_state(self):
        return {"observing": self.observing, "observed_batches": self.observed_batches}

    def set_extra_state(self, state):
        self.observing = bool(state["observing"])
        self.observed_batches = int(state["observed_batches"])

    def extra_repr(self):
        return (f"bits={self.bits}, range=[{self.min_val.item():.4g}, {self.max_val.item():.4g}], "
                f"observing={self.observing}, convention={self.convention}")


class QuantConv2d(nn.Module):
    """Holds an nn.Conv2d (`conv`) and runs it with its weight quantized per output channel at `bits`."""

    def __init__(self, conv, bits, convention="quantface"):
        super().__init__()
        self.conv = conv
        self.bits = check_bits(bits, "wbits")
        self.convention = check_convention(convention)

    def forward(self, x):
        # _conv_forward applies the conv's own padding mode, stride, dilation and groups with the given weight.
        weight = quantize_weight(self.conv.weight, self.bits, convention=self.convention)
        return self.conv._conv_forward(x, weight, self.conv.bias)


class QuantLinear(nn.Module):
    """Holds an nn.Linear (`linear`) and runs it with its weight quantized per output feature at `bits`."""

    def __init__(self, linear, bits, convention="quantface"):
        super().__init__()
        self.linear = linear
        self.bits = check_bits(bits, "wbits")
        self.convention = check_convention(convention)

    def forward(self, x):
        return F.linear(x, quantize_weight(self.linear.weight, self.bits, convention=self.convention),
                        self.linear.bias)


class QuantPReLU(nn.Module):
    """Holds an nn.PReLU (`prelu`): slopes quantized per tensor at `slope_bits`, output quantized at `abits`.

    `slope_bits` is abits for "quantface" (QuantFace's QuantActPreLu quantizes them with its activation bits) and
    wbits for "zero-inclusive".
    """

    def __init__(self, prelu, wbits, abits, convention="quantface"):
        super().__init__()
        self.prelu = prelu
        self.convention = check_convention(convention)
        self.slope_bits = check_bits(abits, "abits") if convention == "quantface" else check_bits(wbits, "wbits")
        self.output_quantizer = ActivationQuantizer(abits, convention)

    def forward(self, x):
        slopes = quantize_weight(self.prelu.weight, self.slope_bits, per_channel=False, convention=self.convention)
        return self.output_quantizer(F.prelu(x, slopes))


class QuantActivation(nn.Module):
    """Holds an activation module (`act`) and quantizes its output."""

    def __init__(self, act, abits, convention="quantface"):
        super().__init__()
        self.act = act
        self.output_quantizer = ActivationQuantizer(abits, convention)

    def forward(self, x):
        return self.output_quantizer(self.act(x))


class QuantBlockOutput(nn.Module):
    """Holds a block (`block`, its insides already quantized) and quantizes its output."""

    def __init__(self, block, abits, convention="quantface"):
        super().__init__()
        self.block = block
        self.output_quantizer = ActivationQuantizer(abits, convention)

    def forward(self, *inputs):  # a DecoderBlock takes (x, skip)
        return self.output_quantizer(self.block(*inputs))


QUANT_WRAPPERS = (QuantConv2d, QuantLinear, QuantPReLU, QuantActivation, QuantBlockOutput)


def is_quantized_block(module):
    """Whether `module` is a block whose output gets an activation quantizer (see the module docstring)."""
    if isinstance(module, facenets.DepthWiseBlock):
        return module.residual  # the stride-2 transitions have no shortcut
    return isinstance(module, BLOCK_TYPES)


def _quantized(module, wbits, abits, convention):
    kind = type(module)
    if kind is nn.Conv2d:
        return QuantConv2d(module, wbits, convention)
    if kind is nn.Linear:
        return QuantLinear(module, wbits, convention)
    if kind is nn.PReLU:
        return QuantPReLU(module, wbits, abits, convention)
    if kind in ACTIVATION_TYPES:
        return QuantActivation(module, abits, convention)
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.PReLU)):
        raise ValueError(f"quantize_model: {kind.__module__}.{kind.__name__} is not supported (only exact "
                         f"nn.Conv2d / nn.Linear / nn.PReLU); refusing to leave it in full precision silently")
    block = is_quantized_block(module)
    final_activation = FINAL_ACTIVATION_OF_BLOCK.get(kind) if block else None
    for name, child in module.named_children():
        if name != final_activation:
            setattr(module, name, _quantized(child, wbits, abits, convention))
    return QuantBlockOutput(module, abits, convention) if block else module


def _device_of(model):
    return next(itertools.chain(model.parameters(), model.buffers())).device


def quantize_model(model, wbits, abits, convention="quantface"):
    """Deep copy of `model` with simulated quantization placed as in the module docstring; `model` is untouched.

    `convention`: "quantface" (QuantFace exactly: raw weight/slope ranges, slopes at abits, its arithmetic) or
    "zero-inclusive" (ranges widened to 0, slopes at wbits, torch's fake_quantize arithmetic); module docstring.
    FastViT blocks in the copy are reparameterized first. The copy's activation ranges are empty: run `calibrate`
    (or `distill`) before using it. `quantization_summary(qmodel)` counts what was quantized.
    """
    check_bits(wbits, "wbits")
    check_bits(abits, "abits")
    check_convention(convention)
    if any(isinstance(m, QUANT_WRAPPERS) for m in model.modules()):
        raise ValueError("quantize_model: the model is already quantized")
    qmodel = copy.deepcopy(model)
    timm.utils.reparameterize_model(qmodel, inplace=True)  # no-op for models without reparameterizable blocks
    # The new quantizers' range buffers are made on the CPU: move them to the model's device.
    return _quantized(qmodel, wbits, abits, convention).to(_device_of(model))


def activation_quantizers(qmodel):
    return [m for m in qmodel.modules() if isinstance(m, ActivationQuantizer)]


def quantization_summary(qmodel):
    """Counts of quantized convs, linears, PReLUs, other activations and block outputs, the bit widths used
    (`wbits`: conv/linear weights, `slope_bits`: PReLU slopes, `abits`: activations) and the conventions."""
    modules = list(qmodel.modules())
    return {
        "convs": sum(isinstance(m, QuantConv2d) for m in modules),
        "linears": sum(isinstance(m, QuantLinear) for m in modules),
        "prelus": sum(isinstance(m, QuantPReLU) for m in modules),
        "activations": sum(isinstance(m, QuantActivation) for m in modules),
        "block_outputs": sum(isinstance(m, QuantBlockOutput) for m in modules),
        "wbits": sorted({m.bits for m in modules if isinstance(m, (QuantConv2d, QuantLinear))}),
        "slope_bits": sorted({m.slope_bits for m in modules if isinstance(m, QuantPReLU)}),
        "abits": sorted({m.bits for m in modules if isinstance(m, ActivationQuantizer)}),
        "convention": sorted({m.convention for m in modules if hasattr(m, "convention")}),
    }


def set_observing(qmodel, observing):
    quantizers = activation_quantizers(qmodel)
    if not quantizers:
        raise ValueError("the model has no activation quantizers: pass the output of quantize_model()")
    for quantizer in quantizers:
        quantizer.observing = observing
    return quantizers


def freeze_ranges(qmodel):
    """Stop every activation quantizer from observing: its range stays fixed in eval and train mode alike."""
    set_observing(qmodel, False)
    return qmodel


def calibrate(qmodel, batches):
    """Fresh activation ranges from `batches` (tensors in the model's input layout), then frozen.

    Ranges are reset, observed over every batch with the model in eval mode without gradients, and frozen; the
    model's train/eval mode is restored afterwards. Returns the number of images seen.
    """
    for quantizer in set_observing(qmodel, True):
        quantizer.reset()
    was_training = qmodel.training
    qmodel.eval()
    device = _device_of(qmodel)
    seen = 0
    batches = list(batches)
    progress = Progress("calibrate", sum(len(batch) for batch in batches))
    try:
        with torch.no_grad():
            for batch in batches:
                qmodel(batch.to(device))
                seen += len(batch)
                progress.update(len(batch))
        progress.finish()
    finally:
        freeze_ranges(qmodel)
        qmodel.train(was_training)
    if seen == 0:
        raise ValueError("calibrate: no calibration images were given")
    return seen


def model_size_bytes(model, wbits, slope_bits=None):
    """Storage of `model`'s parameters in bytes: quantized tensors at their bits, everything else at 32 bits.

    Quantized tensors are those quantize_model quantizes: weights of nn.Conv2d / nn.Linear at `wbits` and PReLU
    slopes at `slope_bits` (None: wbits, as the "zero-inclusive" convention stores them; "quantface" stores them at
    abits: pass slope_bits=abits). Biases, BatchNorm weights/biases and any other parameter count at 32 bits;
    buffers (BatchNorm running statistics) and the per-channel scales/zero points (one pair per output channel, well
    under 1% here) are not counted, as in QuantFace's sizes (parameters x bits). wbits=32 gives the float size, 4
    bytes per parameter.
    Works on a float model and on its quantize_model copy alike (the wrappers hold the original modules). A model
    with reparameterizable blocks (FastViT) is measured as deployed, on a reparameterized copy, for both.
    Total bits rounded up to whole bytes.
    """
    slope_bits = wbits if slope_bits is None else slope_bits
    for bits, what in ((wbits, "wbits"), (slope_bits, "slope_bits")):
        if bits != 32:
            check_bits(bits, what)
    if any(hasattr(m, name) for m in model.modules() for name in REPARAMETERIZE_METHODS):
        model = timm.utils.reparameterize_model(model)  # a deep copy; the caller's model is untouched
    bits_of = {id(m.weight): wbits for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)}
    bits_of.update({id(m.weight): slope_bits for m in model.modules() if type(m) is nn.PReLU})
    bits = sum(p.numel() * bits_of.get(id(p), 32) for p in model.parameters())
    return math.ceil(bits / 8)


def quantized_size_bytes(qmodel, model):
    """model_size_bytes of the float `model` at the bits its quantize_model copy `qmodel` stores: its weight bits
    and its PReLU-slope bits (abits under "quantface", wbits under "zero-inclusive"), read from qmodel itself."""
    summary = quantization_summary(qmodel)
    if len(summary["wbits"]) != 1 or len(summary["slope_bits"]) > 1:
        raise ValueError(f"quantized_size_bytes: one weight and one slope bit width expected, got {summary}")
    slope_bits = summary["slope_bits"][0] if summary["slope_bits"] else None
    return model_size_bytes(model, summary["wbits"][0], slope_bits=slope_bits)


def distillation_loss(student_out, teacher_out):
    """QuantFace loss: MSE (mean over all elements) between L2-normalized embeddings (B, D); for any other
    layout (upscaler images (B, 3, H, W)) MSE between the raw outputs."""
    if student_out.dim() == 2:
        return F.mse_loss(F.normalize(student_out.float(), dim=1), F.normalize(teacher_out.float(), dim=1))
    return F.mse_loss(student_out.float(), teacher_out.float())


def distill(qmodel, teacher, batches, steps, lr, calibrate_steps=0, momentum=0.9, weight_decay=0.0,
            max_grad_norm=5.0):
    """Quantization-aware training of `qmodel` towards the full-precision `teacher` (QuantFace `--qat-steps`).

    Student in train mode, teacher in eval mode without gradients; loss = `distillation_loss`; SGD (Nesterov
    momentum when momentum > 0), gradient norm clipped to `max_grad_norm`, as QuantFace. `batches` (tensors in the
    model's input layout) are cycled for `steps` optimizer steps; the teacher's outputs for them are computed once,
    before the first step (the pool is fixed and the teacher frozen: the same targets, one forward per batch instead
    of one per step; they stay on the student's device, e.g. 2.5 GB for 4096 upscaled 224 px images). Activation
    quantizers observe during the first `calibrate_steps` steps (widening their current ranges) and are frozen
    after; with calibrate_steps 0 the ranges must already be calibrated. Returns the loss of every step (floats,
    read from the device once, at the end); the student is left frozen, in eval mode.
    """
    if steps < 1:
        raise ValueError(f"distill: steps must be >= 1, got {steps}")
    if not 0 <= calibrate_steps <= steps:
        raise ValueError(f"distill: calibrate_steps must be in [0, steps={steps}], got {calibrate_steps}")
    batches = list(batches)
    if not batches:
        raise ValueError("distill: no batches were given")
    set_observing(qmodel, False)
    teacher.eval()
    qmodel.train()
    device, teacher_device = _device_of(qmodel), _device_of(teacher)
    params = [p for p in qmodel.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    with torch.no_grad():
        targets = [teacher(batch.to(teacher_device)).to(device) for batch in batches]
    losses = []  # scalar tensors on the device: no step waits for it
    progress = Progress("distill", steps, unit="steps")
    for step, (batch, target) in zip(range(steps), itertools.cycle(zip(batches, targets))):
        set_observing(qmodel, step < calibrate_steps)
        loss = distillation_loss(qmodel(batch.to(device)), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        losses.append(loss.detach())
        progress.update()
    progress.finish()
    freeze_ranges(qmodel)
    qmodel.eval()
    return torch.stack(losses).tolist()
