"""Our Adam step against torch.optim.Adam on the same gradients, and its state round trip."""

import torch

from rl_trust.optim import Adam


def test_adam_matches_torch_adam_step_for_step():
    g = torch.Generator().manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(300, generator=g))
    theirs = torch.nn.Parameter(ours.detach().clone())
    opt = Adam(ours, lr=3e-3, eps=1e-5)
    ref = torch.optim.Adam([theirs], lr=3e-3, eps=1e-5, foreach=False)
    for step in range(50):
        grad = torch.randn(300, generator=g) * (1 + step % 7)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
        if step == 25:  # a learning-rate change mid-way, as the linear schedule does
            opt.lr = ref.param_groups[0]["lr"] = 1e-3
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours, torch.zeros_like(ours))


def test_adam_state_round_trip_continues_identically():
    g = torch.Generator().manual_seed(1)
    a = torch.nn.Parameter(torch.randn(20, generator=g))
    opt = Adam(a, lr=1e-2)
    for _ in range(5):
        a.grad = torch.randn(20, generator=g)
        opt.step()
    b = torch.nn.Parameter(a.detach().clone())
    other = Adam(b, lr=0.5)
    other.load_state_dict(
        {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state_dict().items()}
    )
    grad = torch.randn(20, generator=g)
    a.grad, b.grad = grad.clone(), grad.clone()
    opt.step()
    other.step()
    assert torch.equal(a, b)
