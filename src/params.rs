//! Parameters: the model's named, persistent tensors, and their gradients.
//!
//! Activations live on the [`Tape`](crate::tape::Tape) and die with it after each step;
//! parameters live here, across steps. An op refers to a parameter by its [`ParamId`], reads
//! its value during forward, and *adds* to its gradient during backward. Zeroing the
//! gradients is an explicit step ([`Params::zero_grads`]).
//!
//! Non-trainable state that must be saved with the model (batch-norm running statistics) is
//! stored here too, marked `trainable: false`: optimizers skip it and it has no gradient.

use crate::tensor::Tensor;

/// Index of a parameter in [`Params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub value: Tensor,
    /// Same shape as `value` for trainable parameters; empty otherwise.
    pub grad: Tensor,
    pub trainable: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Params {
    list: Vec<Param>,
}

impl Params {
    pub fn new() -> Self {
        Params::default()
    }

    /// Registers a trainable parameter with a zero gradient.
    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        let grad = Tensor::zeros(value.shape());
        self.list.push(Param { name: name.into(), value, grad, trainable: true });
        ParamId(self.list.len() - 1)
    }

    /// Registers persistent state that is saved with the model but not trained.
    pub fn add_buffer(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        self.list.push(Param { name: name.into(), value, grad: Tensor::default(), trainable: false });
        ParamId(self.list.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.list.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        self.list.iter_mut()
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.list[id.0]
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut Param {
        &mut self.list[id.0]
    }

    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.list[id.0].value
    }

    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.list[id.0].value
    }

    /// The value (read) and gradient (to accumulate into) of one parameter.
    pub fn value_and_grad(&mut self, id: ParamId) -> (&Tensor, &mut Tensor) {
        let p = &mut self.list[id.0];
        assert!(p.trainable, "parameter {} is not trainable", p.name);
        (&p.value, &mut p.grad)
    }

    pub fn grad_mut(&mut self, id: ParamId) -> &mut Tensor {
        self.value_and_grad(id).1
    }

    pub fn zero_grads(&mut self) {
        for p in self.list.iter_mut().filter(|p| p.trainable) {
            p.grad.fill_zero();
        }
    }

    /// Number of trainable scalars (Keras's "Trainable params").
    pub fn trainable_count(&self) -> usize {
        self.list.iter().filter(|p| p.trainable).map(|p| p.value.len()).sum()
    }

    /// Number of non-trainable scalars (Keras's "Non-trainable params").
    pub fn buffer_count(&self) -> usize {
        self.list.iter().filter(|p| !p.trainable).map(|p| p.value.len()).sum()
    }
}
