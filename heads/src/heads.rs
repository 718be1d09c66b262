//! [`Heads`]: the configuration, the parameters and the modules, loaded or made once; the serving
//! forward passes (the whole pass from raw features, or the early projection, the heatmap side and the
//! score in turn as the server runs them). The training side of `Heads` is in [`crate::training`].

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::config::HeadsConfig;
use crate::error::{HeadsError, Result};
use crate::fusion;
use crate::init;
use crate::input_checks::{all_finite, check_score_hidden, input_err, pack_features, validate, validate_views};
use crate::inputs::{HeadsInput, MapsInput, ProjectedView, ViewInput};
use crate::model::HeadsModel;
use crate::outputs::{HeadsMaps, HeadsOutput};
use crate::render;
use crate::weights;

/// The heads: configuration, parameters (as trainable candle variables) and modules.
pub struct Heads {
    pub(crate) config: HeadsConfig,
    pub(crate) varmap: VarMap,
    pub(crate) model: HeadsModel,
    /// Unique per instance in this process: tells a [`ProjectedView`] made by other heads.
    pub(crate) id: u64,
}

static NEXT_HEADS_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl std::fmt::Debug for Heads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heads").field("config", &self.config).finish_non_exhaustive()
    }
}

pub(crate) fn to_scalar(t: &Tensor) -> Result<f32> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?[0])
}

impl Heads {
    /// Fresh parameters for `config`, drawn deterministically from `seed`.
    pub fn init(config: HeadsConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let varmap = VarMap::new();
        let backend = init::SeededVarMap { varmap: varmap.clone(), seed };
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
        let model = HeadsModel::new(&config, vb)?;
        let id = NEXT_HEADS_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self { config, varmap, model, id })
    }

    /// Loads a weights file written by [`Heads::save`] for a running LLM of width `expected_llm_width`
    /// whose tiles have `expected_tokens_per_tile` image tokens. Every tensor is checked.
    pub fn load(path: impl AsRef<Path>, expected_llm_width: usize, expected_tokens_per_tile: usize) -> Result<Self> {
        let path = path.as_ref();
        let (config, tensors) = weights::read(path)?;
        if config.llm_width != expected_llm_width {
            return Err(HeadsError::ModelMismatch { what: "llm_width", weights: config.llm_width, model: expected_llm_width });
        }
        if config.tokens_per_tile() != expected_tokens_per_tile {
            return Err(HeadsError::ModelMismatch {
                what: "tokens_per_tile",
                weights: config.tokens_per_tile(),
                model: expected_tokens_per_tile,
            });
        }
        // The expected tensor set comes from building the modules, so it cannot disagree with them.
        let heads = Self::init(config, 0)?;
        weights::check_tensors(path, &weights::shapes(&heads.varmap), &tensors)?;
        {
            let data = heads.varmap.data().lock().expect("varmap lock poisoned");
            for (name, var) in data.iter() {
                var.set(&tensors[name])?;
            }
        }
        // A zero scale would turn every score into NaN; finite but non-positive means a corrupt file.
        let scale = tensors["token_scorer.input.scale"].to_vec1::<f32>()?;
        if scale.iter().any(|&s| s <= 0.0) {
            return Err(HeadsError::Format { path: path.to_path_buf(), reason: "token_scorer.input.scale has non-positive values".into() });
        }
        Ok(heads)
    }

    /// Writes the weights and the config (with the current calibration values) to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut config = self.config.clone();
        config.calibration = self.model.calibration.effective()?;
        weights::save(path.as_ref(), &config, &self.varmap)
    }

    /// The configuration.
    pub fn config(&self) -> &HeadsConfig {
        &self.config
    }

    /// Heatmaps and score for one image.
    ///
    /// Runs the same modules as [`Heads::forward_tensors`], but the parameter-free stitch/resize/fusion
    /// tail at output resolution goes through [`render`] (one parallel pass, same numbers up to rounding).
    pub fn forward(&self, input: &HeadsInput) -> Result<HeadsOutput> {
        // Run the whole pass on a rayon worker: the pass makes ~100 parallel calls (GEMMs, kernels), and
        // each one made from a thread outside the pool is queued to the pool and waits for a worker to
        // wake up, where from a worker it runs at once and lends halves to the other worker. On a busy
        // machine those wake-ups were a large share of the time. (Inside the pool already: runs inline.)
        rayon::scope(|_| {
            let views = validate(&self.config, self.id, input)?;
            let (w, tokens, n) = (self.config.llm_width, self.config.tokens_per_tile(), views.len());
            let features = pack_features(&views, input.grid_cols * input.grid_rows)?;
            // All views in one product: one GEMM of n·g² rows rather than n of g².
            let image = self.model.mapper.project_image(&Tensor::from_vec(features, (n, tokens, w), &Device::Cpu)?)?;
            let maps = self.maps_from_image(input.grid_cols, input.grid_rows, &views, &image, input.out_height, input.out_width)?;
            // `validate` checked the [SCORE] state.
            self.score_checked(maps, input.score_hidden)
        })
    }

    /// Projects one view's raw features (`tokens_per_tile × W`, checked for length and finiteness) for
    /// [`Heads::forward_maps`]; see [`ProjectedView`].
    pub fn project_view(&self, features: &[f32]) -> Result<ProjectedView> {
        let (w, tokens) = (self.config.llm_width, self.config.tokens_per_tile());
        if features.len() != tokens * w {
            return Err(input_err("features", format!("{} values, expected {}", features.len(), tokens * w)));
        }
        if !all_finite(features) {
            return Err(input_err("features", "contains NaN or infinite values".into()));
        }
        rayon::scope(|_| {
            let features = Tensor::from_slice(features, (1, tokens, w), &Device::Cpu)?;
            let values = self.model.mapper.project_image(&features)?.flatten_all()?.to_vec1::<f32>()?;
            Ok(ProjectedView { values, heads_id: self.id })
        })
    }

    /// The heatmap side of [`Heads::forward`] from views projected in advance by [`Heads::project_view`]:
    /// everything that does not need the `[SCORE]` state. [`Heads::score_maps`] then adds the score:
    /// together, the same numbers as `forward` up to rounding.
    pub fn forward_maps(&self, input: &MapsInput<&ProjectedView>) -> Result<HeadsMaps> {
        rayon::scope(|_| {
            let (cols, rows) = (input.grid_cols, input.grid_rows);
            let geometry = (cols, rows, input.out_width, input.out_height);
            let views = validate_views(&self.config, self.id, geometry, &input.tiles, input.thumbnail.as_ref())?;
            let (tokens, d) = (self.config.tokens_per_tile(), self.config.hidden_width);
            let mut packed = Vec::with_capacity(views.len() * tokens * d);
            for view in &views {
                packed.extend_from_slice(&view.features.values);
            }
            let image = Tensor::from_vec(packed, (views.len(), tokens, d), &Device::Cpu)?;
            self.maps_from_image(cols, rows, &views, &image, input.out_height, input.out_width)
        })
    }

    /// Completes [`Heads::forward_maps`] with the `[SCORE]` state (length W, checked): the token scorer
    /// and the calibration, well under a millisecond.
    pub fn score_maps(&self, maps: HeadsMaps, score_hidden: &[f32]) -> Result<HeadsOutput> {
        check_score_hidden(&self.config, score_hidden)?;
        self.score_checked(maps, score_hidden)
    }

    /// [`Heads::score_maps`] for a `[SCORE]` state already checked.
    fn score_checked(&self, maps: HeadsMaps, score_hidden: &[f32]) -> Result<HeadsOutput> {
        let m = &self.model;
        let s_token = m.token_scorer.forward(&Tensor::from_slice(score_hidden, self.config.llm_width, &Device::Cpu)?)?;
        let score = m.calibration.forward(&s_token, &maps.s_map)?;
        let r = maps.rendered;
        Ok(HeadsOutput {
            heatmap: r.heatmap,
            local: r.local,
            global: r.global,
            local_weight: r.local_weight,
            sigma_local: r.sigma_local,
            sigma_global: r.sigma_global,
            score: to_scalar(&score)?,
            s_token: to_scalar(&s_token)?,
            s_map: to_scalar(&maps.s_map)?,
        })
    }

    /// The heatmap side once the image side is projected (`image` `[views, g², D]`): the mapper's
    /// decoder and read-outs, the rendering at output size and the map scorer.
    fn maps_from_image<I>(
        &self,
        cols: usize,
        rows: usize,
        views: &[&ViewInput<I>],
        image: &Tensor,
        out_h: usize,
        out_w: usize,
    ) -> Result<HeadsMaps> {
        let (w, n) = (self.config.llm_width, views.len());
        let dev = Device::Cpu;
        let m = &self.model;
        let hidden: Vec<f32> = views.iter().flat_map(|v| v.map_hidden.iter().copied()).collect();
        let map_hidden = Tensor::from_vec(hidden, (n, w), &dev)?;
        let maps = m.mapper.forward_serving(&map_hidden, image)?;
        let probs = candle_nn::ops::sigmoid(&maps.logits)?.flatten_all()?.to_vec1::<f32>()?;
        let sigma = fusion::sigma_from_log(&maps.log_sigma)?.flatten_all()?.to_vec1::<f32>()?;
        let rule = match m.fusion.constant_weight()? {
            None => render::WeightRule::Adaptive,
            Some(w) => render::WeightRule::Constant(w),
        };
        let tile_maps = render::TileMaps {
            probs: &probs,
            sigma: &sigma,
            side: self.config.tile_map_size(),
            cols,
            rows,
            has_thumbnail: n > cols * rows,
        };
        let rendered = render::render(tile_maps, rule, out_h, out_w);
        let fused = Tensor::from_slice(rendered.heatmap.as_slice().expect("standard layout"), (out_h, out_w), &dev)?;
        let s_map = m.map_scorer.forward(&fused)?;
        Ok(HeadsMaps { rendered, s_map })
    }
}
