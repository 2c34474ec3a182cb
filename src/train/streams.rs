//! The random streams of one run ([`RunStreams`]), forked from its seed in a fixed order (the
//! [`train`](crate::train) module docs list it). It only forks generators; what each stream
//! drives is decided by its user (the split, the initialisation, [`fit`](crate::train::fit)).

use kernels::Rng;

/// The random streams of one run, forked from `Rng::new(seed)` in the order the
/// [`train`](crate::train) module docs give.
#[derive(Clone, Debug)]
pub struct RunStreams {
    pub split: Rng,
    pub init: Rng,
    pub fit: Rng,
}

impl RunStreams {
    pub fn new(seed: u64) -> Self {
        let mut root = Rng::new(seed);
        let split = root.fork();
        let init = root.fork();
        let fit = root.fork();
        RunStreams { split, init, fit }
    }
}
