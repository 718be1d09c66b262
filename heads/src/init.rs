//! Deterministic, seeded parameter initialisation.
//!
//! candle's own initialisers draw from a process-global RNG, so two `Heads::init(cfg, 7)` would differ.
//! This backend for `VarBuilder` creates every parameter as a `Var` in a `VarMap` (so training can
//! optimise it) from a stream seeded by `(seed, parameter name)`: values do not depend on creation order.

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarMap};

/// SplitMix64: tiny, fast, statistically fine for weight initialisation.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal by Box–Muller (one value per call; simplicity over speed).
    pub(crate) fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: log is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// FNV-1a, to turn a parameter name into a stream offset.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

/// Draws a tensor of `shape` following `init` from a stream determined by `seed` and `name`.
pub(crate) fn seeded_tensor(seed: u64, name: &str, shape: &Shape, init: Init) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed ^ name_hash(name).rotate_left(17));
    let n = shape.elem_count();
    let uniform = |rng: &mut SplitMix64, lo: f64, up: f64| lo + (up - lo) * rng.next_f64();
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Uniform { lo, up } => (0..n).map(|_| uniform(&mut rng, lo, up) as f32).collect(),
        Init::Randn { mean, stdev } => (0..n).map(|_| (mean + stdev * rng.next_normal()) as f32).collect(),
        Init::Kaiming { dist, fan, non_linearity } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n).map(|_| uniform(&mut rng, -bound, bound) as f32).collect()
                }
                candle_nn::init::NormalOrUniform::Normal => {
                    (0..n).map(|_| (std * rng.next_normal()) as f32).collect()
                }
            }
        }
    }
}

/// A `VarBuilder` backend that fills a `VarMap` with seeded values.
pub(crate) struct SeededVarMap {
    pub(crate) varmap: VarMap,
    pub(crate) seed: u64,
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("varmap lock poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("parameter {name} requested as {s:?} but exists as {:?}", var.shape());
            }
            return Ok(var.as_tensor().clone());
        }
        let values = seeded_tensor(self.seed, name, &s, h);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("parameter {name} has no shape hint and does not exist"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().expect("varmap lock poisoned").contains_key(name)
    }
}
