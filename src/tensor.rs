//! The tensor: flat `f32` storage plus a shape, row-major.
//!
//! Images are NCHW: `[N, C, H, W]` with `W` fastest. A tensor owns its data; there are no
//! views or strides here (the kernels take slices, and `reshape` only relabels). Shapes are
//! checked eagerly, and a mismatch panics with both shapes in the message: that is a
//! programmer error, not user input.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        Tensor { shape: shape.to_vec(), data: vec![value; shape.iter().product()] }
    }

    /// Wraps `data` with `shape`.
    ///
    /// # Panics
    /// When `data.len()` is not the product of `shape`.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(data.len(), n, "Tensor::from_vec: {} values for shape {shape:?} ({n} values)", data.len());
        Tensor { shape: shape.to_vec(), data }
    }

    /// A scalar, shape `[1]`.
    pub fn scalar(v: f32) -> Self {
        Tensor { shape: vec![1], data: vec![v] }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Size of dimension `i`.
    pub fn dim(&self, i: usize) -> usize {
        self.shape[i]
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The same data under a new shape with the same number of values.
    ///
    /// # Panics
    /// When the value counts differ.
    pub fn reshape(mut self, shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            self.data.len(),
            "reshape: {:?} ({} values) to {shape:?} ({n} values)",
            self.shape,
            self.data.len()
        );
        self.shape = shape.to_vec();
        self
    }

    /// Values per item of the first dimension: `len / shape[0]` (the flattened width).
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Sets every value to 0, keeping the allocation.
    pub fn fill_zero(&mut self) {
        self.data.fill(0.0);
    }

    /// `self += other`, same shape.
    pub fn add_assign(&mut self, other: &Tensor) {
        assert_eq!(self.shape, other.shape, "add_assign: {:?} += {:?}", self.shape, other.shape);
        self.add_slice(&other.data);
    }

    /// `self += values`, element by element (as many values as the tensor holds).
    pub fn add_slice(&mut self, values: &[f32]) {
        assert_eq!(self.data.len(), values.len(), "add_slice: {:?} += {} values", self.shape, values.len());
        self.data.iter_mut().zip(values).for_each(|(a, &b)| *a += b);
    }
}
