//! Everything only training needs: the optimiser ([`adamw`]), the paper's losses ([`losses`]), the
//! evaluation metrics ([`metrics`]), and the training side of [`Heads`]: the differentiable candle graph
//! on tensors, the variables an optimiser may change, and fitting the `[SCORE]` standardisation.
//! Serving never calls any of it; `Heads::forward` runs the same modules through the fast path.

pub mod adamw;
pub mod losses;
pub mod metrics;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use ndarray::Array2;

use crate::error::Result;
use crate::heads::{to_scalar, Heads};
use crate::input_checks::{pack_features, validate};
use crate::inputs::HeadsInput;
use crate::model::{HeadsModel, TensorInput, TensorOutput};
use crate::outputs::HeadsOutput;
use crate::standardize;

fn to_array(t: &Tensor) -> Result<Array2<f32>> {
    let (h, w) = t.dims2()?;
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(Array2::from_shape_vec((h, w), v).expect("tensor has h·w elements"))
}

impl Heads {
    /// The candle modules, for training and tensor-level use.
    pub fn model(&self) -> &HeadsModel {
        &self.model
    }

    /// Every parameter, fitted statistics included (see [`Heads::trainable`] for an optimiser).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The variables an optimiser may change, by name (sorted): every parameter except the fitted input
    /// statistics (`standardize::is_statistic`).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        let mut vars: Vec<_> =
            data.iter().filter(|(name, _)| !standardize::is_statistic(name)).map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Fits the `[SCORE]` standardisation on `score_hidden` rows (the training set's), see
    /// `standardize.rs`.
    pub fn fit_score_statistics<'a>(&self, score_hidden: impl IntoIterator<Item = &'a [f32]>) -> Result<()> {
        let w = self.config.llm_width;
        let (mean, scale) = standardize::statistics(score_hidden, w)?;
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        for (name, values) in [("token_scorer.input.mean", mean), ("token_scorer.input.scale", scale)] {
            let var = data.get(name).expect("the token scorer creates its statistics");
            var.set(&Tensor::from_vec(values, w, &Device::Cpu)?)?;
        }
        Ok(())
    }

    /// Validates `input` against the config and packs it into tensors (tiles, then the thumbnail).
    pub fn input_tensors(&self, input: &HeadsInput) -> Result<TensorInput> {
        let views = validate(&self.config, self.id, input)?;
        let (w, t, n) = (self.config.llm_width, self.config.tokens_per_tile(), views.len());
        let dev = Device::Cpu;
        let hidden: Vec<f32> = views.iter().flat_map(|v| v.map_hidden.iter().copied()).collect();
        let features = pack_features(&views, input.grid_cols * input.grid_rows)?;
        Ok(TensorInput {
            grid_cols: input.grid_cols,
            grid_rows: input.grid_rows,
            map_hidden: Tensor::from_vec(hidden, (n, w), &dev)?,
            features: Tensor::from_vec(features, (n, t, w), &dev)?,
            has_thumbnail: input.thumbnail.is_some(),
            score_hidden: Tensor::from_slice(input.score_hidden, w, &dev)?,
            out_height: input.out_height,
            out_width: input.out_width,
        })
    }

    /// The differentiable forward pass on tensors (no input checks beyond candle's own).
    pub fn forward_tensors(&self, input: &TensorInput) -> Result<TensorOutput> {
        self.model.forward(input)
    }

    /// [`Heads::forward`] computed entirely through the candle graph (the training path), converted to
    /// arrays; slower, used to check that the serving fast path agrees with it.
    pub fn forward_graph(&self, input: &HeadsInput) -> Result<HeadsOutput> {
        let out = self.model.forward(&self.input_tensors(input)?)?;
        Ok(HeadsOutput {
            heatmap: to_array(&out.heatmap)?,
            local: to_array(&out.local)?,
            global: to_array(&out.global)?,
            local_weight: to_array(&out.local_weight)?,
            sigma_local: to_array(&out.sigma_local)?,
            sigma_global: to_array(&out.sigma_global)?,
            score: to_scalar(&out.score)?,
            s_token: to_scalar(&out.s_token)?,
            s_map: to_scalar(&out.s_map)?,
        })
    }
}
