"""The Model: a stack of recurrent layers plus a linear head over ONE flat parameter buffer with named views,
with PyTorch's parameter names, shapes, initialisation and loss definitions (see docs/kernels.md)."""
import threading
from collections import OrderedDict

import numpy as np

from hpcrnn.kernels import CELLS, head, stack
from hpcrnn.kernels.checks import check_batch, check_config, check_indices, check_state
from hpcrnn.kernels.common import load_blas
from hpcrnn.kernels.dropout import draw_mask
from hpcrnn.rowblocks import RowThreads, join_states, slice_state

_WORKSPACES_KEPT = 4  # (batch, steps) shapes per row block whose buffers stay allocated (train + eval + a last partial batch)


def parameter_layout(cell, input_size, hidden_size, num_layers, output_size, bidirectional=False):
    """Ordered (name, shape) pairs: the keys and shapes of torch's rnn + nn.Linear head state_dict
    (bidirectional: each layer's `_reverse` tensors follow its forward ones; layers > 0 and the head read 2H)."""
    spec, H = CELLS[cell], hidden_size
    width = 2 * H if bidirectional else H
    layout = []
    for layer in range(num_layers):
        inputs = input_size if layer == 0 else width
        for suffix in ("", "_reverse") if bidirectional else ("",):
            layout += [(f"rnn.weight_ih_l{layer}{suffix}", (spec.gates * H, inputs)),
                       (f"rnn.weight_hh_l{layer}{suffix}", (spec.gates * H, H)),
                       (f"rnn.bias_ih_l{layer}{suffix}", (spec.gates * H,))]
            if spec.bias_hh:
                layout.append((f"rnn.bias_hh_l{layer}{suffix}", (spec.gates * H,)))
    return layout + [("head.weight", (output_size, width)), ("head.bias", (output_size,))]


class Model:
    """Recurrent network + head. Parameters live in `params` (flat, `dtype`); `views[name]` are views of it."""

    def __init__(self, cell="lstm", input_size=1, hidden_size=32, num_layers=1, output_size=1,
                 head="last", dtype=np.float32, seed=0, dropout=0.0, bidirectional=False, threads=1):
        """dropout: p of nn.LSTM's dropout on each layer's output but the last (training only, masks from
        (seed, step, global sample index)); bidirectional: torch's bidirectional layers (output 2H);
        threads: the rank's cores, each running a block of the batch's rows (set_threads)."""
        self.dtype = check_config(cell, input_size, hidden_size, num_layers, output_size, head, dtype, dropout,
                                  bidirectional)
        load_blas()   # before any kernel is compiled or loaded from cache
        self.cell, self.head, self.seed = cell, head, int(seed)
        self.spec = CELLS[cell]
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.output_size = int(num_layers), int(output_size)
        self.dropout, self.bidirectional = float(dropout), bool(bidirectional)
        layout = parameter_layout(cell, self.input_size, self.hidden_size, self.num_layers, self.output_size,
                                  self.bidirectional)
        self.names = [name for name, _ in layout]
        self._shapes = OrderedDict(layout)
        self.num_params = sum(int(np.prod(shape)) for shape in self._shapes.values())
        self.params = np.zeros(self.num_params, self.dtype)
        self.views = self.unflatten(self.params)
        # PyTorch's defaults: every LSTM/GRU/RNN tensor and nn.Linear(H, O)'s weight and bias
        # are U(-k, k) with k = 1/sqrt(H).
        bound = 1.0 / np.sqrt(self.hidden_size)
        self.params[...] = np.random.default_rng(seed).uniform(-bound, bound, self.num_params)
        self._workspaces, self._workspaces_lock = OrderedDict(), threading.Lock()   # row threads share it
        self._rows, self._block_grads = RowThreads(1), []
        self.set_threads(threads)

    def set_threads(self, threads):
        """Runs each batch as up to `threads` blocks of rows on as many threads at once (hpcrnn.rowblocks);
        1 = the calling thread only. Results equal one thread's to float summation order."""
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads: must be an integer >= 1, got {threads!r}")
        if int(threads) != self._rows.threads:
            self._rows.close()
            self._rows = RowThreads(int(threads))

    @property
    def threads(self):
        return self._rows.threads

    META_DEFAULTS = {"dropout": 0.0, "bidirectional": False}   # what a meta written before these keys means

    def meta(self):
        """The constructor's arguments as JSON-able values (what a checkpoint records); see from_meta."""
        return {"cell": self.cell, "input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "output_size": self.output_size, "head": self.head,
                "dtype": np.dtype(self.dtype).name, "dropout": self.dropout, "bidirectional": self.bidirectional}

    @classmethod
    def from_meta(cls, meta, seed=0):
        """A model of the shape `meta` describes (keys of meta(); other keys are ignored; without `dropout`
        or `bidirectional`, as checkpoints written before them, 0 and False)."""
        return cls(cell=meta["cell"], input_size=meta["input_size"], hidden_size=meta["hidden_size"],
                   num_layers=meta["num_layers"], output_size=meta["output_size"], head=meta["head"],
                   dtype=np.dtype(meta["dtype"]).type, seed=seed,
                   dropout=meta.get("dropout", cls.META_DEFAULTS["dropout"]),
                   bidirectional=meta.get("bidirectional", cls.META_DEFAULTS["bidirectional"]))

    # ---- parameters ------------------------------------------------------------------------------------
    def unflatten(self, flat):
        """Dict of views into `flat` (1-D, num_params long) with the state_dict keys and shapes."""
        views, offset = {}, 0
        for name, shape in self._shapes.items():
            size = int(np.prod(shape))
            views[name] = flat[offset:offset + size].reshape(shape)
            offset += size
        return views

    def layer_span(self, layer):
        """(start, stop) of layer `layer`'s parameters in the flat buffer; they are contiguous, layer by
        layer, with the head last, so each finished layer of BPTT is one slice to reduce."""
        offset, span = 0, None
        for name, shape in self._shapes.items():
            size = int(np.prod(shape))
            if name.startswith("rnn.") and name.removesuffix("_reverse").endswith(f"_l{layer}"):
                span = (offset if span is None else span[0], offset + size)
            offset += size
        if span is None:
            raise ValueError(f"layer: {layer} out of range [0, {self.num_layers})")
        return span

    def flat_grad_buffer(self):
        """A new zeroed flat array with the layout of `params`."""
        return np.zeros(self.num_params, self.dtype)

    def state_dict(self):
        """Copies of every parameter, keyed like the equivalent torch module's state_dict."""
        return {name: view.copy() for name, view in self.views.items()}

    def load_state_dict(self, state):
        """Copies values in; ValueError naming the key on any missing, extra or mis-shaped entry."""
        missing = [name for name in self.names if name not in state]
        extra = [name for name in state if name not in self._shapes]
        if missing or extra:
            raise ValueError(f"state_dict: missing keys {missing}, unexpected keys {extra}")
        for name in self.names:
            value = np.asarray(state[name])
            if value.shape != self._shapes[name]:
                raise ValueError(f"state_dict: {name}: expected shape {self._shapes[name]}, got {value.shape}")
        for name in self.names:
            self.views[name][...] = np.asarray(state[name])

    def _layer_tuples(self, views):
        """Per layer (W_ih, W_hh, b_ih, b_hh) views; bidirectional: a (forward, reverse) pair of them."""
        empty = np.zeros(0, self.dtype)

        def weights(layer, suffix):
            return tuple(views.get(f"rnn.{kind}_l{layer}{suffix}", empty)
                         for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        if self.bidirectional:
            return [(weights(layer, ""), weights(layer, "_reverse")) for layer in range(self.num_layers)]
        return [weights(layer, "") for layer in range(self.num_layers)]

    # ---- inputs ----------------------------------------------------------------------------------------
    def check_inputs(self, x, y=None, lengths=None, check_finite=False, loss=None):
        """Validates and converts a batch: returns (x, y, lengths) with x in the model dtype and lengths an
        int64 [B] array (all T when None). Any bad input raises ValueError naming the argument."""
        return check_batch(self, x, y, lengths, check_finite, loss)

    def _workspace(self, batch, steps, block=0):
        key = (batch, steps, block)
        with self._workspaces_lock:
            if key not in self._workspaces:
                if len(self._workspaces) >= _WORKSPACES_KEPT * self.threads:
                    self._workspaces.popitem(last=False)
                self._workspaces[key] = stack.Workspace(
                    self.cell, batch, steps, self.input_size, self.hidden_size, self.num_layers,
                    self.output_size, self.head == "sequence", self.dtype, self.dropout > 0, self.bidirectional)
            self._workspaces.move_to_end(key)
            return self._workspaces[key]

    def _forward(self, x, lengths, h0, masks=None, block=0):
        """Runs layers and head on row block `block`'s workspace; returns (workspace, the Reversal of a
        bidirectional stack or None)."""
        ws = self._workspace(x.shape[0], x.shape[1], block)
        reversal = stack.Reversal(lengths, x.shape[1]) if self.bidirectional else None
        stack.load_inputs(ws, x, lengths)
        stack.forward(ws, self.cell, self._layer_tuples(self.views), lengths, h0, masks, reversal)
        stack.head_forward(ws, self.head == "sequence", self.views["head.weight"], self.views["head.bias"],
                           lengths)
        return ws, reversal

    def dropout_masks(self, batch, steps, step, sample_indices, block=0):
        """The dropout masks of a training step: per layer None (layer 0, or no dropout) or M [T, B, W] of 0 and
        1/(1-p) multiplying that layer's input; a sample's mask depends on (seed, step, its index) only."""
        if self.dropout == 0 or self.num_layers == 1:
            return None
        ws = self._workspace(batch, steps, block)
        masks = [None] * self.num_layers
        for layer in range(1, self.num_layers):
            draw_mask(ws.M[layer], self.seed, step, layer, sample_indices, self.dropout)
            masks[layer] = ws.M[layer]
        return masks

    def _empty_state(self):
        zeros = np.zeros((0, self.hidden_size), self.dtype)
        pair = self.spec.carries_c
        return [(zeros.copy(), zeros.copy()) if pair else zeros.copy() for _ in range(self.num_layers)]

    # ---- training ----------------------------------------------------------------------------------------
    def forward_backward(self, x, y, grad_out, loss="mse", lengths=None, h0=None, scale=1.0, return_state=False,
                         on_layer_done=None, step=0, sample_indices=None):
        """Returns the SUM over samples of the per-sample loss and ADDS scale * its gradient into grad_out
        (flat, the layout of `params`; the caller zeroes it). h0: initial state per layer (truncated BPTT:
        no gradient flows into it). return_state=True returns (loss_sum, final state per layer).
        on_layer_done(layer), if given, is called as soon as a layer's gradient is complete (top layer first),
        so its slice (`layer_span`) can be reduced while BPTT goes on below it. With dropout, the masks come
        from (seed, step, sample_indices [B], the global indices of the samples; default 0..B-1)."""
        x, y, lengths = self.check_inputs(x, y, lengths, loss=loss)
        h0 = check_state(self, h0, x.shape[0], return_state)
        sample_indices = check_indices(sample_indices, x.shape[0], step)
        if grad_out.shape != (self.num_params,) or grad_out.dtype != self.dtype:
            raise ValueError(f"grad_out: expected a flat {np.dtype(self.dtype).name} array of {self.num_params}, "
                             f"got {grad_out.dtype} {grad_out.shape}")
        if x.shape[0] == 0:
            return (0.0, self._empty_state()) if return_state else 0.0
        blocks = self._rows.blocks(x.shape[0])
        if len(blocks) == 1:
            loss_sum, state = self._forward_backward_rows(0, x, y, grad_out, loss, lengths, h0, scale,
                                                          on_layer_done, step, sample_indices)
        else:
            buffers = [grad_out] + self._block_grad_buffers(len(blocks) - 1)

            def rows(index, a, b):
                if index > 0:
                    buffers[index][...] = 0           # each thread zeroes its own block's gradient
                return self._forward_backward_rows(index, x[a:b], y[a:b], buffers[index], loss, lengths[a:b],
                                                   slice_state(h0, a, b), scale, None, step, sample_indices[a:b])
            results = self._rows.map(rows, blocks)
            for extra in buffers[1:]:
                grad_out += extra
            for layer in reversed(range(self.num_layers)) if on_layer_done is not None else ():
                on_layer_done(layer)          # every block's gradient is in: each layer's slice is complete
            loss_sum = sum(result[0] for result in results)
            state = join_states([result[1] for result in results])
        return (loss_sum, state) if return_state else loss_sum

    def _forward_backward_rows(self, block, x, y, grad_out, loss, lengths, h0, scale, on_layer_done, step,
                               sample_indices):
        """forward_backward of one row block on its own workspace: (loss_sum, final state per layer)."""
        masks = self.dropout_masks(x.shape[0], x.shape[1], step, sample_indices, block)
        ws, reversal = self._forward(x, lengths, h0, masks, block)
        sequence = self.head == "sequence"
        stack.set_targets(ws, y, lengths, sequence, loss)
        loss_sum, _ = stack.loss_forward(ws, y, loss, scale)
        grads = self.unflatten(grad_out)
        stack.backward(ws, self.cell, sequence, self._layer_tuples(self.views), self._layer_tuples(grads),
                       (self.views["head.weight"], self.views["head.bias"]),
                       (grads["head.weight"], grads["head.bias"]), lengths, on_layer_done, reversal)
        return float(loss_sum), stack.final_state(ws, self.cell)

    def _block_grad_buffers(self, count):
        """`count` flat gradient buffers for row blocks 1.., kept between steps (their threads zero them)."""
        while len(self._block_grads) < count:
            self._block_grads.append(self.flat_grad_buffer())
        return self._block_grads[:count]

    def loss_and_grad(self, x, y, loss="mse", lengths=None, h0=None, step=0, sample_indices=None):
        """Mean loss over the batch and a dict of its gradients (keys of state_dict); training mode (dropout
        on, masks of `step` and `sample_indices` as in forward_backward)."""
        grad = self.flat_grad_buffer()
        batch = np.shape(x)[0] if np.ndim(x) else 0
        scale = 1.0 / batch if batch else 0.0
        loss_sum = self.forward_backward(x, y, grad, loss=loss, lengths=lengths, h0=h0, scale=scale, step=step,
                                         sample_indices=sample_indices)
        return loss_sum * scale, {name: view.copy() for name, view in self.unflatten(grad).items()}

    # ---- inference ---------------------------------------------------------------------------------------
    def predict(self, x, lengths=None, h0=None, return_state=False):
        """Outputs [B, O] (head last) or [B, T, O] (head sequence; 0 at padded steps); logits for classifiers.
        Dropout is off here (evaluation mode)."""
        x, _, lengths = self.check_inputs(x, None, lengths)
        h0 = check_state(self, h0, x.shape[0], return_state)
        B, T = x.shape[:2]
        out = np.zeros(self.output_shape(B, T), self.dtype)
        if B == 0:
            return (out, self._empty_state()) if return_state else out

        def rows(block, a, b):
            ws, _ = self._forward(x[a:b], lengths[a:b], slice_state(h0, a, b), block=block)
            self._copy_outputs(ws, out, a, b)
            return stack.final_state(ws, self.cell) if return_state else None
        states = self._rows.map(rows, self._rows.blocks(B))
        self._zero_padding(out, lengths)
        return (out, join_states(states)) if return_state else out

    def output_shape(self, batch, steps):
        """Shape of predict's outputs for a batch: [B, O] (head last) or [B, T, O] (head sequence)."""
        return (batch, steps, self.output_size) if self.head == "sequence" else (batch, self.output_size)

    def _copy_outputs(self, ws, out, a, b):
        """Rows a..b of `out` (output_shape) from the head's outputs in ws (time-major for head sequence)."""
        if self.head == "sequence":
            out[a:b] = ws.y.reshape(-1, b - a, self.output_size).transpose(1, 0, 2)
        else:
            out[a:b] = ws.y

    def _zero_padding(self, out, lengths):
        if self.head == "sequence":
            out[np.arange(out.shape[1])[None, :] >= lengths[:, None]] = 0

    def per_sample_stats(self, x, y, loss, lengths=None, outputs=None):
        """Sums over the local batch for evaluation (forward only): loss_sum, count (samples), and
        sq_err_sum, abs_err_sum, elem_count (regression) or correct (cross_entropy); the others are 0.
        outputs, when given (output_shape), gets what predict() would return, from the same forward pass."""
        x, y, lengths = self.check_inputs(x, y, lengths, loss=loss)
        stats = {"loss_sum": 0.0, "count": int(x.shape[0]), "sq_err_sum": 0.0, "abs_err_sum": 0.0,
                 "elem_count": 0, "correct": 0}
        if x.shape[0] == 0:
            return stats

        def rows(block, a, b):
            ws, _ = self._forward(x[a:b], lengths[a:b], None, block=block)
            if outputs is not None:
                self._copy_outputs(ws, outputs, a, b)
            stack.set_targets(ws, y[a:b], lengths[a:b], self.head == "sequence", loss)
            loss_sum, correct = stack.loss_forward(ws, y[a:b], loss, 0.0)
            part = {"loss_sum": float(loss_sum), "correct": int(correct)}
            if loss != "cross_entropy":
                sq, ab, count = head.error_sums(ws.y, ws.target, ws.weight)
                part.update(sq_err_sum=float(sq), abs_err_sum=float(ab), elem_count=int(count))
            return part
        for part in self._rows.map(rows, self._rows.blocks(x.shape[0])):
            for key, value in part.items():
                stats[key] += value
        if outputs is not None:
            self._zero_padding(outputs, lengths)
        return stats
