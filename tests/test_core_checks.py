import pytest
import torch

from pararnn_ts.core.checks import all_finite


def _cases():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 17, 5, generator=g)
    big = torch.finfo(torch.float32).max
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = base.to(dtype)
        yield f"{dtype} finite", x
        for value in (float("nan"), float("inf"), float("-inf")):
            bad = x.clone()
            bad[2, 16, 4] = value
            yield f"{dtype} {value} at the end", bad
        both = x.clone()
        both[0, 0, 0], both[1, 3, 2] = float("inf"), float("-inf")  # the sum is NaN
        yield f"{dtype} +inf and -inf", both
        huge = torch.full((4, 7), torch.finfo(dtype).max, dtype=dtype)  # finite, but its sum overflows
        yield f"{dtype} finite sum overflow", huge
        yield f"{dtype} empty", x[:, :0]
    yield "float32 overflow with a NaN", torch.tensor([big, big, float("nan")])
    yield "int64", torch.arange(12).reshape(3, 4)
    yield "complex finite", torch.randn(5, dtype=torch.complex64, generator=g)
    yield "complex nan", torch.tensor([1 + 1j, complex(0, float("nan"))], dtype=torch.complex64)


@pytest.mark.parametrize("name, x", list(_cases()), ids=[name for name, _ in _cases()])
def test_all_finite_equals_the_entrywise_test(name, x):
    assert all_finite(x) == bool(torch.isfinite(x).all())
    if x.is_floating_point() and x.numel():
        assert all_finite(x.transpose(0, -1)) == bool(torch.isfinite(x).all())  # non-contiguous
