"""Issue 14 point 3: a rank with C cores runs its batch as C row blocks on C threads; every result equals one
thread's to float summation order, for every cell, head, loss, lengths, carried state, dropout and
bidirectional layers."""
import numpy as np
import pytest

from hpcrnn.model import Model
from hpcrnn.rowblocks import RowThreads, join_states, row_blocks, slice_state


@pytest.mark.parametrize("batch,threads", [(1, 4), (7, 2), (8, 2), (30, 4), (33, 3), (5, 8), (64, 1)])
def test_row_blocks_cover_the_batch_in_even_contiguous_blocks(batch, threads):
    blocks = row_blocks(batch, threads)
    assert blocks[0][0] == 0 and blocks[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    sizes = [stop - start for start, stop in blocks]
    assert max(sizes) - min(sizes) <= 1 and len(blocks) <= threads
    assert len(blocks) == 1 or min(sizes) >= 4


def test_states_slice_and_join_back():
    rng = np.random.default_rng(0)
    state = [(rng.standard_normal((10, 3)), rng.standard_normal((10, 3))), rng.standard_normal((10, 3))]
    parts = [slice_state(state, a, b) for a, b in row_blocks(10, 2)]
    joined = join_states(parts)
    np.testing.assert_array_equal(joined[0][1], state[0][1])
    np.testing.assert_array_equal(joined[1], state[1])
    assert slice_state(None, 0, 3) is None


def test_an_error_in_any_block_is_raised_after_all_blocks_ran():
    ran = []
    pool = RowThreads(3)

    def work(index, start, stop):
        ran.append(index)
        if index == 2:
            raise ValueError("block 2 failed")
        return stop - start
    with pytest.raises(ValueError, match="block 2 failed"):
        pool.map(work, row_blocks(30, 3))
    assert sorted(ran) == [0, 1, 2]
    assert pool.map(lambda i, a, b: (i, a, b), row_blocks(12, 3)) == [(0, 0, 4), (1, 4, 8), (2, 8, 12)]
    pool.close()


def data(cell, B=23, T=9, F=3, O=2, head="last", loss="mse", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, F))
    lengths = rng.integers(1, T + 1, B)
    if loss == "cross_entropy":
        y = rng.integers(0, O, B)
    else:
        y = rng.standard_normal((B, T, O) if head == "sequence" else (B, O))
    return x, y, lengths


def pair(threads, **kwargs):
    one = Model(dtype=np.float64, seed=3, **kwargs)
    many = Model(dtype=np.float64, seed=3, threads=threads, **kwargs)
    return one, many


CASES = [dict(cell="lstm"), dict(cell="gru", head="sequence"), dict(cell="gated", num_layers=2, dropout=0.4),
         dict(cell="rnn", bidirectional=True, num_layers=2), dict(cell="lstm", loss="cross_entropy", output_size=4),
         dict(cell="gru", bidirectional=True, head="sequence")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("threads", [2, 3])
def test_threads_match_one_thread(case, threads):
    case = dict(case)
    loss = case.pop("loss", "mse")
    output_size = case.pop("output_size", 2)
    one, many = pair(threads, input_size=3, hidden_size=6, output_size=output_size, **case)
    x, y, lengths = data(case["cell"], O=output_size, head=case.get("head", "last"), loss=loss)
    indices = np.arange(100, 100 + len(x))
    results = []
    for model in (one, many):
        grad = model.flat_grad_buffer()
        loss_sum = model.forward_backward(x, y, grad, loss=loss, lengths=lengths, scale=0.5, step=7,
                                          sample_indices=indices)
        outputs = np.empty(model.output_shape(*x.shape[:2]), model.dtype)
        results.append((loss_sum, grad, model.predict(x, lengths), model.per_sample_stats(x, y, loss, lengths,
                                                                                           outputs=outputs)))
        np.testing.assert_array_equal(outputs, results[-1][2])     # the same forward pass's outputs as predict
    (l1, g1, p1, s1), (l2, g2, p2, s2) = results
    assert np.isclose(l1, l2, rtol=1e-12)
    np.testing.assert_allclose(g2, g1, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(p2, p1, rtol=1e-12, atol=1e-14)
    assert s1.keys() == s2.keys() and all(np.isclose(s1[k], s2[k], rtol=1e-12) for k in s1)
    assert np.abs(g1).sum() > 0


def test_threads_carry_state_like_one_thread():
    one, many = pair(3, cell="lstm", input_size=3, hidden_size=5, num_layers=2, output_size=2)
    x, y, lengths = data("lstm", B=17)
    rng = np.random.default_rng(1)
    h0 = [(rng.standard_normal((17, 5)), rng.standard_normal((17, 5))) for _ in range(2)]
    out = []
    for model in (one, many):
        grad = model.flat_grad_buffer()
        loss_sum, state = model.forward_backward(x, y, grad, lengths=lengths, h0=h0, return_state=True)
        out.append((loss_sum, grad, state, model.predict(x, lengths, h0=h0, return_state=True)[1]))
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-10, atol=1e-13)
    for a, b in zip(out[0][2] + out[0][3], out[1][2] + out[1][3]):
        np.testing.assert_allclose(b[0], a[0], rtol=1e-12)
        np.testing.assert_allclose(b[1], a[1], rtol=1e-12)


def test_layer_callbacks_come_top_down_with_every_block_summed():
    model = Model(cell="gru", input_size=2, hidden_size=4, num_layers=3, output_size=1, dtype=np.float64,
                  threads=2)
    x, y, lengths = data("gru", B=16, F=2, O=1)
    reference = model.flat_grad_buffer()
    Model.forward_backward(model, x, y, reference, lengths=lengths)
    grad, seen = model.flat_grad_buffer(), []

    def layer_done(layer):
        start, stop = model.layer_span(layer)
        np.testing.assert_allclose(grad[start:stop], reference[start:stop], rtol=1e-12)
        seen.append(layer)
    model.forward_backward(x, y, grad, lengths=lengths, on_layer_done=layer_done)
    assert seen == [2, 1, 0]


def test_set_threads_refuses_nonsense_and_small_batches_run_in_one_block():
    model = Model(cell="rnn", input_size=1, hidden_size=3)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            model.set_threads(bad)
    model.set_threads(4)
    assert model.threads == 4
    x = np.ones((3, 5, 1), np.float32)
    assert model.predict(x).shape == (3, 1)       # 3 rows: one block
