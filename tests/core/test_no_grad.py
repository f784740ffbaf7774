import torch

from adasparse.core._no_grad import no_grad


@no_grad
def _grad_mode(value: int) -> tuple[bool, int]:
    """Returns whether gradients are on inside, and its argument."""
    return torch.is_grad_enabled(), value


def test_turns_gradients_off_and_restores_them() -> None:
    assert torch.is_grad_enabled()
    assert _grad_mode(3) == (False, 3)
    assert torch.is_grad_enabled()


def test_inside_no_grad_it_leaves_the_mode_alone() -> None:
    with torch.no_grad():
        assert _grad_mode(4) == (False, 4)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_restores_gradients_after_an_exception() -> None:
    @no_grad
    def fails() -> None:
        raise RuntimeError("boom")

    try:
        fails()
    except RuntimeError:
        pass
    assert torch.is_grad_enabled()


def test_keeps_the_function_s_name_and_docstring() -> None:
    assert _grad_mode.__name__ == "_grad_mode"
    assert "whether gradients are on" in (_grad_mode.__doc__ or "")


def test_in_place_update_of_a_leaf_is_allowed() -> None:
    leaf = torch.zeros((), requires_grad=True)

    @no_grad
    def bump(tensor: torch.Tensor) -> None:
        tensor.add_(1.0)

    bump(leaf)
    assert leaf.item() == 1.0 and leaf.requires_grad
