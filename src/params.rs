//! Parameters: the model's named, persistent tensors, and their gradients.
//!
//! Activations live on the [`Tape`](crate::tape::Tape) and die with it after each step;
//! parameters live here, across steps. An op refers to a parameter by its [`ParamId`], reads
//! its value during forward, and *adds* to its gradient during backward. Zeroing the
//! gradients is an explicit step ([`Params::zero_grads`]).
//!
//! Non-trainable state that must be saved with the model (batch-norm running statistics) is
//! stored here too, marked `trainable: false`: optimizers skip it and it has no gradient.
//!
//! Every way to change a value goes through a `&mut` accessor here, and each of them gives
//! the set a fresh [`Params::version`]: a layer may then keep something computed from the
//! weights (the convolution's transposed weights) for as long as the version it was made
//! from is current.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::tensor::Tensor;

/// Source of [`Params::version`]s, shared by every set, so that no two changes anywhere get
/// the same version. Equal versions mean equal values: a clone keeps its original's version
/// until either of them changes.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

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
    version: u64,
}

impl Params {
    pub fn new() -> Self {
        Params::default()
    }

    /// Changes whenever a value may have changed: every `&mut` accessor of values (and
    /// [`add`](Self::add)) takes a new one. Gradients do not count.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Takes a fresh version: called by every accessor that can change a value.
    fn touch(&mut self) {
        self.version = NEXT_VERSION.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a trainable parameter with a zero gradient.
    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        self.touch();
        let grad = Tensor::zeros(value.shape());
        self.list.push(Param { name: name.into(), value, grad, trainable: true });
        ParamId(self.list.len() - 1)
    }

    /// Registers persistent state that is saved with the model but not trained.
    pub fn add_buffer(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        self.touch();
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
        self.touch();
        self.list.iter_mut()
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.list[id.0]
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut Param {
        self.touch();
        &mut self.list[id.0]
    }

    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.list[id.0].value
    }

    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        self.touch();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_accessor_takes_a_new_version_and_reads_do_not() {
        let mut p = Params::new();
        let w = p.add("w", Tensor::zeros(&[2]));
        let mut seen = vec![p.version()];
        p.value_mut(w);
        seen.push(p.version());
        p.get_mut(w);
        seen.push(p.version());
        p.iter_mut().for_each(drop);
        seen.push(p.version());
        p.add_buffer("m", Tensor::zeros(&[1]));
        seen.push(p.version());
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(unique, seen, "a version repeated: {seen:?}");

        let v = p.version();
        let _ = (p.value(w), p.get(w), p.iter().count());
        p.grad_mut(w).data_mut()[0] = 1.0;
        p.zero_grads();
        assert_eq!(p.version(), v, "reads and gradients changed the version");
    }

    #[test]
    fn a_clone_keeps_the_version_until_either_changes() {
        let mut a = Params::new();
        let w = a.add("w", Tensor::zeros(&[2]));
        let mut b = a.clone();
        assert_eq!(a.version(), b.version());
        b.value_mut(w);
        assert_ne!(a.version(), b.version());
        let mut c = Params::new();
        c.add("w", Tensor::zeros(&[2]));
        assert_ne!(a.version(), c.version(), "two sets built apart share a version");
    }
}
