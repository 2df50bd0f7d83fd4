"""Margin heads (racecomp.margin_heads): ArcFace and CosFace logits on hand-computed cases, fp32 under autocast."""
import math

import pytest
import torch
import torch.nn.functional as F

from racecomp import margin_heads


# Margin heads. Hand-made case: 2-D embeddings along the x axis, class centres at known angles theta.
def head_with_centre_angles(head, angles):
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0 * math.cos(a), 3.0 * math.sin(a)] for a in angles]))
    return head


def test_arcface_logits_known_answer():
    s, m = 64.0, 0.5
    angles = [0.3, 1.2, 3.0]  # 3.0 > pi - m: the true-class logit falls back to cos(theta) - m sin(m)
    head = head_with_centre_angles(margin_heads.ArcFace(2, 3, s=s, m=m), angles)
    embeddings = torch.tensor([[2.0, 0.0]] * 3)  # the norm must not matter
    logits = head(embeddings, torch.tensor([0, 1, 2]))
    expected = torch.tensor([[s * math.cos(a) for a in angles]] * 3, dtype=torch.float64)
    expected[0, 0] = s * math.cos(0.3 + m)
    expected[1, 1] = s * math.cos(1.2 + m)
    expected[2, 2] = s * (math.cos(3.0) - m * math.sin(m))
    assert logits.dtype == torch.float32
    assert torch.allclose(logits.double(), expected, atol=1e-4)


def test_arcface_torch_gradient_has_its_value_and_no_margin_in_the_gradient():
    # arcface_torch (losses.py L42-48 @7fadd420): cos(arccos(cos theta) + m) computed under no_grad, so the
    # true-class logit has no fallback past theta + m = pi and its gradient is the one of s * cos theta.
    s, m = 64.0, 0.5
    angles = [0.3, 1.2, 3.0]
    exact = head_with_centre_angles(margin_heads.ArcFace(2, 3, s=s, m=m), angles)
    torch_like = head_with_centre_angles(margin_heads.get_margin_head("arcface", 2, 3, s=s, m=m,
                                                                      gradient="arcface_torch"), angles)
    embeddings = torch.tensor([[2.0, 0.0]] * 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    logits = torch_like(embeddings, labels)
    expected = torch.tensor([[s * math.cos(a) for a in angles]] * 3, dtype=torch.float64)
    for i, a in enumerate(angles):
        expected[i, i] = s * math.cos(a + m)  # 3.0 + m > pi: cos(3.5), no fallback
    assert torch.allclose(logits.double(), expected, atol=1e-4)
    # The gradient equals that of the plain cosine logits s * cos theta (margin 0).
    weights = torch.randn(3, 3, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    (logits * weights).sum().backward()
    got = embeddings.grad.clone()
    embeddings.grad = None
    plain = head_with_centre_angles(margin_heads.CosFace(2, 3, s=s, m=0.0), angles)
    (plain(embeddings, labels) * weights).sum().backward()
    assert torch.allclose(got, embeddings.grad, rtol=1e-6, atol=1e-6)
    embeddings.grad = None
    (exact(embeddings, labels) * weights).sum().backward()
    assert not torch.allclose(got, embeddings.grad, rtol=1e-3, atol=1e-3)  # the exact gradient is another
    with pytest.raises(ValueError, match="ArcFace"):
        margin_heads.get_margin_head("cosface", 2, 3, gradient="arcface_torch")


def test_arcface_easy_margin_known_answer():
    s, m = 64.0, 0.5
    head = head_with_centre_angles(margin_heads.ArcFace(2, 2, s=s, m=m, easy_margin=True), [0.3, 2.0])
    logits = head(torch.tensor([[1.0, 0.0]] * 2), torch.tensor([0, 1]))
    expected = torch.tensor([[s * math.cos(0.3 + m), s * math.cos(2.0)],
                             [s * math.cos(0.3), s * math.cos(2.0)]], dtype=torch.float64)  # cos 2.0 < 0: no margin
    assert torch.allclose(logits.double(), expected, atol=1e-4)


def test_arcface_true_logit_never_increases_with_angle():
    angles = torch.linspace(0.0, math.pi, 721).tolist()
    head = head_with_centre_angles(margin_heads.ArcFace(2, len(angles)), angles)
    embedding = torch.tensor([[1.0, 0.0]])
    true_logits = torch.stack([head(embedding, torch.tensor([i]))[0, i] for i in range(0, len(angles), 8)])
    assert (true_logits[1:] <= true_logits[:-1] + 1e-4).all()


def test_cosface_logits_known_answer():
    s, m = 64.0, 0.35
    angles = [0.3, 1.2, 3.0]
    head = head_with_centre_angles(margin_heads.CosFace(2, 3), angles)
    logits = head(torch.tensor([[0.5, 0.0]] * 3), torch.tensor([2, 0, 1]))
    expected = torch.tensor([[s * math.cos(a) for a in angles]] * 3, dtype=torch.float64)
    for row, label in enumerate([2, 0, 1]):
        expected[row, label] = s * (math.cos(angles[label]) - m)
    assert torch.allclose(logits.double(), expected, atol=1e-4)


@pytest.mark.parametrize("name", margin_heads.MARGIN_HEAD_NAMES)
def test_margin_head_float32_under_bf16_autocast(name):
    torch.manual_seed(0)
    head = margin_heads.get_margin_head(name, 64, 10)
    embeddings = torch.randn(4, 64).bfloat16()
    labels = torch.tensor([0, 3, 9, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(embeddings, labels)
    assert logits.dtype == torch.float32
    # bf16 arithmetic would be off by up to ~0.1 at s=64; fp32 agrees with an fp32 run to rounding
    assert torch.allclose(logits, head(embeddings.float(), labels), atol=1e-4)


@pytest.mark.parametrize("name", margin_heads.MARGIN_HEAD_NAMES)
def test_margin_head_gradient_finite_at_cosine_plus_minus_one(name):
    head = head_with_centre_angles(margin_heads.get_margin_head(name, 2, 3), [0.0, math.pi, 1.0])
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss = F.cross_entropy(head(embeddings, torch.tensor([0, 1, 2])), torch.tensor([0, 1, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(head.weight.grad).all()
    assert head.weight.grad.abs().sum() > 0


def test_margin_head_options_and_label_checks():
    assert margin_heads.get_margin_head("cosface", 8, 4).m == 0.35
    assert margin_heads.get_margin_head("arcface", 8, 4).m == 0.5
    head = margin_heads.get_margin_head("arcface", 8, 4, s=30.0, m=0.2)
    assert (head.s, head.m, tuple(head.weight.shape)) == (30.0, 0.2, (4, 8))
    with pytest.raises(ValueError, match="unknown margin head"):
        margin_heads.get_margin_head("sphereface", 8, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        head(torch.randn(2, 8), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="shape"):
        head(torch.randn(2, 8), torch.tensor([[0, 1]]))
