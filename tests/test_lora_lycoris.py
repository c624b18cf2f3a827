"""OFT, BOFT and GLoRA (LyCORIS) on the tiny SD1 model: the patched weights against dense computations
written here from the published definitions (a Cayley rotation per block of output rows; BOFT as a product
of permuted block-diagonal rotations built as full matrices; GLoRA's W + W A + B), at several multipliers."""

from __future__ import annotations

import pytest
import torch

from sdwebui.models.lora import LoraError, load_network
from tests.lora_fixtures import kohya_name, randn, save_safetensors, with_prefix
from tests.test_lora_core import CONV3, LINEAR, WIDE, gen, patched_weight, sd1, sd1_index, weight_of

__all__ = ["sd1", "sd1_index"]  # the module-scoped fixtures, shared with test_lora_core
PROJ_IN = "down_blocks.0.attentions.0.proj_in"  # SD1: Conv2d(32, 32, 1)


def rotation(block: torch.Tensor, constraint: float = 0.0, out: int = 0, total_q=None) -> torch.Tensor:
    """Cayley: (I + Q) @ inverse(I - Q) of Q = B - B^T (Q scaled down to the constraint's norm)."""
    q = block - block.T
    if constraint and total_q is not None and total_q > constraint * out:
        q = q * (constraint * out / total_q)
    eye = torch.eye(block.shape[0], dtype=torch.float64)
    return (eye + q) @ torch.linalg.inv(eye - q)


def q_norm(blocks: torch.Tensor) -> float:
    return float(torch.sqrt(sum(((b - b.T) ** 2).sum() for b in blocks.reshape(-1, *blocks.shape[-2:]))))


@pytest.mark.parametrize("target,constraint", [(LINEAR, 0.0), (CONV3, 0.0), (WIDE, 1e-4)])
def test_oft_rotates_blocks_of_output_rows(sd1, sd1_index, tmp_path, target, constraint):
    before = weight_of(sd1, f"unet.{target}")
    out = before.shape[0]
    blocks = randn(out // 8, 8, 8, generator=gen(3), scale=0.2)
    parts = {"oft_blocks": blocks, "alpha": torch.tensor(constraint)}
    total = q_norm(blocks.double())
    dense = torch.block_diag(*[rotation(b.double(), constraint, out, total).T for b in blocks])
    rotated = (dense @ before.double().reshape(out, -1)).reshape(before.shape)
    for multiplier in (1.0, 0.4):
        after = patched_weight(sd1, sd1_index, tmp_path, with_prefix(kohya_name(target), parts),
                               f"unet.{target}", multiplier)  # fmt: skip
        expected = before.double() + multiplier * (rotated - before.double())
        torch.testing.assert_close(after.double(), expected, rtol=1e-4, atol=1e-5)
    assert not constraint or total > constraint * out  # the constrained case really is clamped
    assert torch.equal(weight_of(sd1, f"unet.{target}"), before)


def test_oft_rescale_and_old_oft_diag_rotation(sd1, sd1_index, tmp_path):
    before = weight_of(sd1, f"unet.{LINEAR}")
    blocks = randn(4, 8, 8, generator=gen(4), scale=0.2)
    rescale = 1 + randn(32, 1, generator=gen(5))
    dense = torch.block_diag(*[rotation(b.double()).T for b in blocks])
    tensors = with_prefix(kohya_name(LINEAR), {"oft_blocks": blocks, "rescale": rescale})
    after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{LINEAR}")
    torch.testing.assert_close(
        after.double(), rescale.double() * (dense @ before.double()), rtol=1e-4, atol=1e-5
    )
    # old LyCORIS files store the rotation itself as oft_diag
    given = torch.stack([rotation(b.double()).float() for b in blocks])
    after = patched_weight(sd1, sd1_index, tmp_path, with_prefix(kohya_name(LINEAR), {"oft_diag": given}),
                           f"unet.{LINEAR}", name="diag")  # fmt: skip
    torch.testing.assert_close(after.double(), dense @ before.double(), rtol=1e-4, atol=1e-5)


def butterfly_permutation(out: int, stride: int) -> torch.Tensor:
    """P with (P x)[c*2s + k*2 + g] = x[c*2s + g*s + k]: rows `stride` apart become neighbours."""
    perm = torch.zeros(out, out, dtype=torch.float64)
    for c in range(out // (2 * stride)):
        for k in range(stride):
            for g in range(2):
                perm[c * 2 * stride + k * 2 + g, c * 2 * stride + g * stride + k] = 1
    return perm


@pytest.mark.parametrize("target", [LINEAR, CONV3])
def test_boft_is_a_product_of_permuted_block_rotations(sd1, sd1_index, tmp_path, target):
    before = weight_of(sd1, f"unet.{target}")
    out, size = before.shape[0], 4
    steps = 4  # 32 rows in 8 blocks of 4: strides 2, 4, 8, 16
    blocks = randn(steps, out // size, size, size, generator=gen(6), scale=0.2)
    transform = torch.eye(out, dtype=torch.float64)
    for step in range(steps):
        perm = butterfly_permutation(out, 2**step * size // 2)
        turn = torch.block_diag(*[rotation(b.double()) for b in blocks[step]])
        transform = perm.T @ turn @ perm @ transform
    expected = (transform @ before.double().reshape(out, -1)).reshape(before.shape)
    tensors = with_prefix(kohya_name(target), {"oft_blocks": blocks, "alpha": torch.tensor(0.0)})
    for multiplier in (1.0, 0.5):
        after = patched_weight(sd1, sd1_index, tmp_path, tensors, f"unet.{target}", multiplier)
        torch.testing.assert_close(
            after.double(), before.double() + multiplier * (expected - before.double()), rtol=1e-4, atol=1e-5
        )
    assert not torch.allclose(expected, before.double())
    assert torch.allclose(transform @ transform.T, torch.eye(out, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("target", [LINEAR, PROJ_IN, WIDE])
def test_glora_is_w_a_plus_b_scaled_by_alpha_over_rank(sd1, sd1_index, tmp_path, target):
    before = weight_of(sd1, f"unet.{target}")
    out, inp = before.shape[:2]
    kernel = [1] * (before.dim() - 2)
    rank, alpha = 4, 2.0
    a1, a2 = randn(rank, inp, *kernel, generator=gen(7)), randn(inp, rank, *kernel, generator=gen(8))
    b1, b2 = randn(rank, inp, *kernel, generator=gen(9)), randn(out, rank, *kernel, generator=gen(10))
    parts = {"a1.weight": a1, "a2.weight": a2, "b1.weight": b1, "b2.weight": b2, "alpha": torch.tensor(alpha)}
    after = patched_weight(
        sd1, sd1_index, tmp_path, with_prefix(kohya_name(target), parts), f"unet.{target}", 0.6
    )
    # the module's forward as GLoRA defines it: y = W (x + A x) + B x, A = a2 a1 (in x in), B = b2 b1
    x = torch.randn(3, inp, generator=gen(11)).double()
    w, scale = before.double().reshape(out, inp), alpha / rank * 0.6
    a = a2.double().reshape(inp, rank) @ a1.double().reshape(rank, inp)
    b = b2.double().reshape(out, rank) @ b1.double().reshape(rank, inp)
    expected = x @ w.T + scale * (x @ a.T @ w.T + x @ b.T)
    torch.testing.assert_close(x @ after.double().reshape(out, inp).T, expected, rtol=1e-4, atol=1e-5)


def test_oft_blocks_that_do_not_cover_the_rows_are_an_error(sd1_index, tmp_path):
    tensors = with_prefix(kohya_name(LINEAR), {"oft_blocks": torch.zeros(3, 8, 8)})
    network = load_network(save_safetensors(tensors, tmp_path / "bad.safetensors"), sd1_index)
    from sdwebui.models.lora import compute_delta

    module = network.modules[f"unet.{LINEAR}"]
    with pytest.raises(LoraError, match="3 blocks of 8 do not cover the 32 output rows"):
        compute_delta(torch.zeros(32, 32), module, 1.0)
