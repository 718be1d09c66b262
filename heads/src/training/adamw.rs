//! AdamW (Loshchilov & Hutter: Adam with decoupled weight decay) whose state can be saved and restored.
//!
//! candle-nn's `AdamW` keeps its moments and step counter private, so a resumed run would restart
//! with zero moments and an un-warmed bias correction: a different trajectory from the uninterrupted
//! run. This one exposes the state as named tensors (`m.NAME`, `v.NAME`) plus the step, which the
//! trainer writes into its checkpoint.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::{HeadsError, Result};

/// Hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// The optimiser over named variables.
pub struct AdamW {
    slots: Vec<Slot>,
    step: usize,
    params: AdamWParams,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW").field("vars", &self.slots.len()).field("step", &self.step).field("params", &self.params).finish()
    }
}

fn state_err(reason: String) -> HeadsError {
    HeadsError::Input { field: "optimizer_state", reason }
}

impl AdamW {
    /// Zero moments at step 0 for `vars` (names must be unique).
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Slot { name, m: zeros.clone(), v: zeros, var })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { slots, step: 0, params })
    }

    /// Steps taken so far (the bias correction's `t`).
    pub fn step_count(&self) -> usize {
        self.step
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// Back-propagates `loss` and updates every variable that received a gradient.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let (correct_m, correct_v) = (1.0 / (1.0 - p.beta1.powi(t)), 1.0 / (1.0 - p.beta2.powi(t)));
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else { continue };
            // candle leaves a variable's gradient attached to the forward graph it came from; kept in
            // the moments, it would chain every step's graph to the next (heie train grew ~28 MB a step
            // on the fixture, to 12 GB on long runs). Detached, the moments hold values only.
            let g = &g.detach();
            slot.m = ((&slot.m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            slot.v = ((&slot.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&slot.m * correct_m)? / ((&slot.v * correct_v)?.sqrt()? + p.eps)?)?;
            let decayed = (slot.var.as_tensor() * (1.0 - p.lr * p.weight_decay))?;
            slot.var.set(&(decayed - (update * p.lr)?)?)?;
        }
        Ok(())
    }

    /// The moments as `m.NAME` / `v.NAME` tensors (detached copies).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            out.push((format!("m.{}", s.name), s.m.copy()?));
            out.push((format!("v.{}", s.name), s.v.copy()?));
        }
        Ok(out)
    }

    /// Restores [`AdamW::state`] and the step. Every variable's two moments must be present with its
    /// shape, finite, and nothing else may be: a state for another model is an error, not a silent reset.
    pub fn restore(&mut self, step: usize, state: &HashMap<String, Tensor>) -> Result<()> {
        if state.len() != 2 * self.slots.len() {
            return Err(state_err(format!("{} tensors, expected {} (two per variable)", state.len(), 2 * self.slots.len())));
        }
        let mut restored = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let get = |kind: &str| -> Result<Tensor> {
                let key = format!("{kind}.{}", s.name);
                let t = state.get(&key).ok_or_else(|| state_err(format!("missing {key}")))?;
                if t.dims() != s.var.dims() {
                    return Err(state_err(format!("{key} has shape {:?}, the variable {:?}", t.dims(), s.var.dims())));
                }
                let t = t.to_dtype(s.var.dtype())?;
                if !t.flatten_all()?.to_vec1::<f32>()?.iter().all(|x| x.is_finite()) {
                    return Err(state_err(format!("{key} holds NaN or infinite values")));
                }
                Ok(t)
            };
            restored.push((get("m")?, get("v")?));
        }
        for (s, (m, v)) in self.slots.iter_mut().zip(restored) {
            (s.m, s.v) = (m, v);
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_moments_hold_values_not_the_graph_of_the_step() {
        // Two variables multiplied, as in every layer: each one's gradient is computed from the other.
        let w = Var::from_slice(&[1.0f32, -2.0, 3.0, 0.5], (2, 2), &Device::Cpu).unwrap();
        let u = Var::from_slice(&[0.5f32, 1.0, -1.0, 2.0], (2, 2), &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), w.clone()), ("u".into(), u.clone())], AdamWParams::default()).unwrap();
        for _ in 0..3 {
            let loss = (w.as_tensor() * u.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        for slot in &opt.slots {
            assert!(!slot.m.track_op() && !slot.v.track_op(), "{}: a moment keeps a backprop graph alive", slot.name);
        }
        assert_eq!(opt.step_count(), 3);
    }
}
