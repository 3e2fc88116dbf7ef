"""lstm / gru / rnn against PyTorch autograd with identical weights: outputs, loss and every gradient, float32
and float64, full and variable-length batches (each sample run on its own valid prefix), truncated BPTT;
bidirectional layers against torch's (also with packed sequences)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the reference for lstm/gru/rnn (pip install torch)")

import hpcrnn  # noqa: E402

from test_kernels import make_problem  # noqa: E402

TORCH_CELLS = ("lstm", "gru", "rnn")
HEAD_LOSSES = (("last", "mse"), ("last", "mae"), ("last", "cross_entropy"), ("sequence", "mse"),
               ("sequence", "mae"))


class TorchNet(torch.nn.Module):
    """What a PyTorch user writes: self.rnn + self.head, batch-first."""

    def __init__(self, cell, input_size, hidden_size, num_layers, output_size, head, bidirectional=False):
        super().__init__()
        kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        self.rnn = kind(input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional)
        self.head = torch.nn.Linear(hidden_size * (2 if bidirectional else 1), output_size)
        self.head_kind = head

    def forward(self, x, h0=None):
        out, state = self.rnn(x, h0)
        return self.head(out[:, -1] if self.head_kind == "last" else out), state


def torch_loss(kind, y_hat, y):
    if kind == "cross_entropy":
        return torch.nn.functional.cross_entropy(y_hat, y)
    if kind == "mse":
        return torch.nn.functional.mse_loss(y_hat, y)
    return torch.nn.functional.l1_loss(y_hat, y)


def torch_twin(model):
    net = TorchNet(model.cell, model.input_size, model.hidden_size, model.num_layers, model.output_size,
                   model.head, model.bidirectional)
    net = net.to(torch.float64 if model.dtype == np.float64 else torch.float32)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return net


def torch_reference(net, x, y, loss, lengths, dtype):
    """(outputs, mean loss, grads): whole batch, or with lengths each sample on its own valid prefix."""
    net.zero_grad()
    if lengths is None:
        y_hat, _ = net(torch.from_numpy(x.astype(dtype)))
        value = torch_loss(loss, y_hat, torch.from_numpy(y if loss == "cross_entropy" else y.astype(dtype)))
        value.backward()
        return y_hat.detach().numpy(), value.item(), {k: p.grad.numpy() for k, p in net.named_parameters()}
    outputs, total = [], 0.0
    for b, steps in enumerate(lengths):
        y_hat, _ = net(torch.from_numpy(x[b:b + 1, :steps].astype(dtype)))
        target = y[b:b + 1] if net.head_kind == "last" else y[b:b + 1, :steps]
        target = target if loss == "cross_entropy" else target.astype(dtype)
        value = torch_loss(loss, y_hat, torch.from_numpy(target)) / len(lengths)
        value.backward()
        total += value.item()
        out = y_hat.detach().numpy()[0]
        outputs.append(out if net.head_kind == "last" else np.pad(out, ((0, x.shape[1] - steps), (0, 0))))
    return np.stack(outputs), total, {k: p.grad.numpy() for k, p in net.named_parameters()}


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("head,loss", HEAD_LOSSES)
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_matches_torch_autograd(cell, head, loss, layers, dtype, with_lengths):
    model, x, y, lengths = make_problem(cell, head, loss, layers, with_lengths, dtype=dtype, batch=5, steps=7,
                                        features=3, hidden=16, outputs=4, seed=11)
    check_against_torch(model, x, y, loss, lengths, dtype)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head,loss", [("last", "mse"), ("sequence", "mse"), ("last", "cross_entropy")])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_bidirectional_matches_torch_autograd(cell, head, loss, dtype, with_lengths):
    _, x, y, lengths = make_problem(cell, head, loss, 2, with_lengths, batch=4, steps=6, features=3, outputs=3,
                                    seed=13)
    model = hpcrnn.Model(cell=cell, input_size=3, hidden_size=5, num_layers=2, output_size=3, head=head,
                         dtype=dtype, seed=13, bidirectional=True)
    check_against_torch(model, x, y, loss, lengths, dtype)


def check_against_torch(model, x, y, loss, lengths, dtype):
    net = torch_twin(model)
    expected_out, expected_loss, expected_grads = torch_reference(net, x, y, loss, lengths, dtype)
    loss_value, grads = model.loss_and_grad(x, y, loss=loss, lengths=lengths)
    y_hat = model.predict(x, lengths=lengths)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(y_hat, expected_out, rtol=tol, atol=tol)
    assert np.isclose(loss_value, expected_loss, rtol=tol, atol=tol)
    assert set(grads) == set(expected_grads)
    for name, expected in expected_grads.items():
        scale = np.abs(expected).max() + 1e-3
        np.testing.assert_allclose(grads[name], expected, rtol=0, atol=tol * scale, err_msg=name)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_state_dict_loads_into_torch_unchanged(cell, bidirectional):
    model = hpcrnn.Model(cell=cell, input_size=3, hidden_size=6, num_layers=2, output_size=2, dtype=np.float32,
                         bidirectional=bidirectional)
    net = TorchNet(cell, 3, 6, 2, 2, "last", bidirectional)
    assert list(model.state_dict()) == list(net.state_dict())
    for name, tensor in net.state_dict().items():
        assert model.views[name].shape == tuple(tensor.shape), name
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_truncated_bptt_matches_torch_with_detached_state(cell):
    model, x, y, _ = make_problem(cell, "sequence", "mse", 2, False, batch=3, steps=10, features=3, hidden=8,
                                  outputs=2, seed=5)
    net = torch_twin(model)
    first, second = x[:, :4], x[:, 4:]
    _, state = model.predict(first, return_state=True)
    grad = model.flat_grad_buffer()
    loss_sum, final = model.forward_backward(second, y[:, 4:], grad, h0=state, return_state=True)
    # torch: window 2 from window 1's final state, detached (gradients stop at the window edge)
    _, torch_state = net(torch.from_numpy(first))
    torch_state = tuple(s.detach() for s in torch_state) if cell == "lstm" else torch_state.detach()
    net.zero_grad()
    y_hat, torch_final = net(torch.from_numpy(second), torch_state)
    value = torch_loss("mse", y_hat, torch.from_numpy(y[:, 4:])) * x.shape[0]
    value.backward()
    assert np.isclose(loss_sum, value.item(), rtol=1e-10)
    for name, parameter in net.named_parameters():
        np.testing.assert_allclose(model.unflatten(grad)[name], parameter.grad.numpy(), rtol=1e-9, atol=1e-12)
    for layer in range(2):
        ours = final[layer][0] if cell == "lstm" else final[layer]
        theirs = (torch_final[0] if cell == "lstm" else torch_final)[layer].detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_bidirectional_last_is_the_packed_output_at_each_last_step(cell):
    """head "last" reads pad_packed_sequence's output at step len-1: [forward after len steps, reverse after
    its first step (x[len-1])], the reverse direction starting at each sample's last valid step."""
    model, x, _, lengths = make_problem(cell, "last", "mse", 2, True, batch=4, steps=6, features=3, hidden=5,
                                        outputs=2, seed=17)
    model = hpcrnn.Model(cell=cell, input_size=3, hidden_size=5, num_layers=2, output_size=3, dtype=np.float64,
                         seed=3, bidirectional=True)
    net = torch_twin(model)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(net.rnn(packed)[0], batch_first=True, total_length=6)
    expected = net.head(out[torch.arange(4), torch.from_numpy(lengths - 1)]).detach().numpy()
    np.testing.assert_allclose(model.predict(x, lengths=lengths), expected, rtol=1e-10, atol=1e-12)
