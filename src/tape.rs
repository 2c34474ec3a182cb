//! Reverse-mode automatic differentiation on a tape of whole-tensor operations.
//!
//! micrograd's idea, one node per *tensor op* instead of per scalar: forward appends one
//! [`Node`] per op to an arena (`Vec`) in creation order, holding the op's output value and a
//! boxed [`Backward`] that knows how to push the output's gradient to its inputs. Because an
//! op's inputs are always created before it, backward is a plain loop over the arena in
//! reverse: no reference counting, no topological sort.
//!
//! Gradients *accumulate* (`+=`): a value used by two ops receives the sum of both
//! contributions, which is what the multivariate chain rule asks for.
//!
//! Leaves made with [`Tape::input`] (data) need no gradient; ops skip computing gradients for
//! inputs that do not need one (e.g. the first convolution's input gradient).

use crate::params::Params;
use crate::tensor::Tensor;

/// A handle to a node on the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(pub(crate) usize);

/// The backward half of an op. `out` is the op's own output value and `dout` the gradient of
/// the final loss with respect to it; the implementation adds its inputs' gradients into
/// `grads`.
pub trait Backward: Send + Sync {
    fn backward(&self, out: &Tensor, dout: &Tensor, grads: &mut Grads);
}

/// One recorded op: its output, the gradient flowing into it, and how to go further back.
pub struct Node {
    value: Tensor,
    grad: Option<Tensor>,
    needs_grad: bool,
    op: Option<Box<dyn Backward>>,
}

/// Buffers of finished steps, kept for reuse: a training step allocates the same tensors
/// every time, and large fresh allocations cost page faults (the kernel zeroes every page
/// on first touch), which on a small CNN can take longer than the arithmetic.
#[derive(Default)]
pub struct BufferPool {
    free: Vec<Vec<f32>>,
    /// Buffers handed out since the last [`BufferPool::trim`].
    taken: usize,
}

impl BufferPool {
    /// The smallest free buffer that holds `n` values, or a new one; length set to `n`.
    /// Contents are unspecified until the caller writes them.
    fn take(&mut self, n: usize) -> Vec<f32> {
        self.taken += 1;
        let best =
            self.free.iter().enumerate().filter(|(_, b)| b.capacity() >= n).min_by_key(|(_, b)| b.capacity());
        match best.map(|(i, _)| i) {
            Some(i) => {
                let mut b = self.free.swap_remove(i);
                b.resize(n, 0.0);
                b
            }
            None => vec![0.0; n],
        }
    }

    /// A tensor of zeros, reusing a freed buffer when one is large enough.
    pub fn zeros(&mut self, shape: &[usize]) -> Tensor {
        let mut data = self.take(shape.iter().product());
        data.fill(0.0);
        Tensor::from_vec(shape, data)
    }

    /// A tensor whose every value the caller promises to overwrite (a forward op's output).
    /// Reused buffers hold stale values; debug builds fill them with NaN so that an element
    /// the op forgot to write shows up in the tests.
    pub fn scratch(&mut self, shape: &[usize]) -> Tensor {
        let mut data = self.take(shape.iter().product());
        if cfg!(debug_assertions) {
            data.fill(f32::NAN);
        }
        Tensor::from_vec(shape, data)
    }

    /// Returns a tensor's storage to the pool.
    pub fn recycle(&mut self, t: Tensor) {
        let data = t.into_data();
        if data.capacity() > 0 {
            self.free.push(data);
        }
    }

    /// Keeps at most as many free buffers as were taken since the last trim, the largest ones,
    /// and frees the rest. Tensors made outside the pool (the input batch) are recycled too,
    /// so without this the pool would gain a buffer every step and grow without bound.
    pub fn trim(&mut self) {
        if self.free.len() > self.taken {
            self.free.sort_unstable_by_key(|b| std::cmp::Reverse(b.capacity()));
            self.free.truncate(self.taken);
        }
        self.taken = 0;
    }

    /// Free buffers held (for the tests).
    pub fn free_buffers(&self) -> usize {
        self.free.len()
    }
}

/// What a [`Backward`] can reach: the values and gradients of earlier nodes, and the
/// parameters.
pub struct Grads<'a> {
    pub nodes: NodeGrads<'a>,
    pub params: &'a mut Params,
}

/// The nodes created before the one being differentiated.
pub struct NodeGrads<'a> {
    nodes: &'a mut [Node],
    pool: &'a mut BufferPool,
}

impl NodeGrads<'_> {
    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    /// Whether `v`'s gradient is wanted; ops skip work for inputs where it is not.
    pub fn needs_grad(&self, v: Var) -> bool {
        self.nodes[v.0].needs_grad
    }

    /// The value of `v` (read) and its gradient (to accumulate into, zeroed on first use).
    pub fn value_and_grad(&mut self, v: Var) -> (&Tensor, &mut Tensor) {
        let node = &mut self.nodes[v.0];
        let pool = &mut *self.pool;
        let grad = node.grad.get_or_insert_with(|| pool.zeros(node.value.shape()));
        (&node.value, grad)
    }

    pub fn grad_mut(&mut self, v: Var) -> &mut Tensor {
        self.value_and_grad(v).1
    }

    /// The value of `v` and its gradient, for an op whose backward sets every element of it:
    /// `(value, grad, accumulate)`. The first op to reach `v` gets a buffer of stale values and
    /// `accumulate == false`, and must overwrite all of it; a later one (a node read by two
    /// ops, as a residual block's input) gets `true` and adds. Overwriting saves zeroing the
    /// buffer first, a pass over memory as long as the op's own (on the `ours` preset, an
    /// eighth of a training step went to zeroing gradients).
    pub fn value_and_grad_to_set(&mut self, v: Var) -> (&Tensor, &mut Tensor, bool) {
        let node = &mut self.nodes[v.0];
        let pool = &mut *self.pool;
        let accumulate = node.grad.is_some();
        let grad = node.grad.get_or_insert_with(|| pool.scratch(node.value.shape()));
        (&node.value, grad, accumulate)
    }
}

/// The arena of nodes for one forward/backward pass. A training loop keeps one tape and
/// calls [`Tape::reset`] between steps, so the buffers are reused.
#[derive(Default)]
pub struct Tape {
    nodes: Vec<Node>,
    pool: BufferPool,
    /// Set by [`Tape::no_grad`]: ops need not keep what only their backward would use.
    no_grad: bool,
}

impl Tape {
    pub fn new() -> Self {
        Tape::default()
    }

    /// A tape for inference only (PyTorch's `torch.no_grad()`): [`push`](Tape::push) keeps
    /// no backward op, ops may skip computing what only their backward would use (the
    /// max-pools' argmaxes), and [`backward`](Tape::backward) panics.
    pub fn no_grad() -> Self {
        Tape { no_grad: true, ..Tape::default() }
    }

    /// Whether a backward pass may follow (false on a [`Tape::no_grad`] tape).
    pub fn records_grad(&self) -> bool {
        !self.no_grad
    }

    /// Forgets every node, keeping their buffers for the next step.
    pub fn reset(&mut self) {
        for node in self.nodes.drain(..) {
            self.pool.recycle(node.value);
            if let Some(g) = node.grad {
                self.pool.recycle(g);
            }
        }
        self.pool.trim();
    }

    /// Free buffers in the tape's pool (for the tests: it must not grow from step to step).
    pub fn pooled_buffers(&self) -> usize {
        self.pool.free_buffers()
    }

    /// A zeroed tensor from the tape's pool.
    pub fn zeros(&mut self, shape: &[usize]) -> Tensor {
        self.pool.zeros(shape)
    }

    /// A tensor from the pool that the caller will overwrite entirely (see
    /// [`BufferPool::scratch`]).
    pub fn scratch(&mut self, shape: &[usize]) -> Tensor {
        self.pool.scratch(shape)
    }

    /// A leaf holding data: no gradient is computed for it.
    pub fn input(&mut self, value: Tensor) -> Var {
        self.push_node(value, false, None)
    }

    /// A leaf whose gradient is wanted (used by the gradient checks to differentiate with
    /// respect to an input).
    pub fn leaf(&mut self, value: Tensor) -> Var {
        self.push_node(value, true, None)
    }

    /// Records an op's output. `needs_grad` says whether anything before it is trainable.
    pub fn push(&mut self, value: Tensor, needs_grad: bool, op: Box<dyn Backward>) -> Var {
        if self.no_grad {
            // No backward will run: the op's saved state (argmaxes, masks) is dropped here.
            return self.push_node(value, false, None);
        }
        self.push_node(value, needs_grad, Some(op))
    }

    fn push_node(&mut self, value: Tensor, needs_grad: bool, op: Option<Box<dyn Backward>>) -> Var {
        self.nodes.push(Node { value, grad: None, needs_grad, op });
        Var(self.nodes.len() - 1)
    }

    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    pub fn needs_grad(&self, v: Var) -> bool {
        self.nodes[v.0].needs_grad
    }

    /// The gradient of the last [`Tape::backward`]'s loss with respect to `v`, if any reached it.
    pub fn grad(&self, v: Var) -> Option<&Tensor> {
        self.nodes[v.0].grad.as_ref()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Backpropagates from `loss` (seeded with a gradient of ones, so a scalar loss gets
    /// `d loss / d loss = 1`), accumulating into every reachable node and parameter gradient.
    pub fn backward(&mut self, loss: Var, params: &mut Params) {
        assert!(!self.no_grad, "Tape::backward on a no_grad tape");
        let mut seed = self.pool.zeros(self.nodes[loss.0].value.shape());
        seed.data_mut().fill(1.0);
        match &mut self.nodes[loss.0].grad {
            Some(g) => {
                g.add_assign(&seed);
                self.pool.recycle(seed);
            }
            slot => *slot = Some(seed),
        }
        for i in (0..=loss.0).rev() {
            let (before, rest) = self.nodes.split_at_mut(i);
            let node = &mut rest[0];
            let (Some(op), Some(dout)) = (node.op.as_ref(), node.grad.as_ref()) else { continue };
            if !node.needs_grad {
                continue;
            }
            let mut grads = Grads { nodes: NodeGrads { nodes: before, pool: &mut self.pool }, params };
            op.backward(&node.value, dout, &mut grads);
        }
    }
}
