//! HEIE's native heads: from the VLM's `[MAP]`/`[SCORE]` hidden states and per-tile image features to a
//! pixel heatmap of implausible regions and a calibrated plausibility score.
//!
//! Pipeline: [`mapper`] (per tile and thumbnail) → [`stitch`] (local and global maps at image size) →
//! [`fusion`] (σ-weighted per pixel) → [`scorer`] + [`calibration`] (final score). All learned modules
//! are candle modules in one [`model::HeadsModel`], so training ([`losses`]) and serving share them.
//! This crate knows nothing of llama.cpp: callers hand in plain `f32` slices.

pub mod adamw;
pub mod calibration;
pub mod config;
pub mod error;
pub mod fusion;
mod init;
pub mod kernels;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod mapper;
pub mod model;
pub mod render;
pub mod scorer;
pub mod standardize;
pub mod stitch;
pub mod upsample;
pub mod weights;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ndarray::Array2;
use rayon::prelude::*;

pub use config::{CalibrationConfig, FusionVariant, HeadsConfig};
pub use error::{HeadsError, Result};
pub use model::{HeadsModel, TensorInput, TensorOutput};

/// Largest accepted output side, so a bad request cannot allocate gigabytes.
pub const MAX_OUTPUT_SIDE: usize = 8192;
/// Largest accepted tile grid (InternVL3 uses at most 12 tiles by default; 64 leaves ample room).
pub const MAX_TILES: usize = 64;

/// One tile's (or the thumbnail's) inputs. `I` is its image side: the raw post-projector features
/// (`&[f32]`, see [`TileFeatures`]) or, for [`Heads::forward_maps`], a [`ProjectedView`].
#[derive(Debug, Clone, Copy)]
pub struct ViewInput<'a, I> {
    /// Last-layer hidden state at this tile's `[MAP]` token, length W.
    pub map_hidden: &'a [f32],
    /// The image tokens: raw features are `tokens_per_tile × W`, row-major (token grid in row-major order).
    pub features: I,
}

/// A view with its raw post-projector features.
pub type TileFeatures<'a> = ViewInput<'a, &'a [f32]>;

/// The image side of a view, raw or projected: what [`Heads`] checks before using it.
pub trait ViewImage {
    /// The values; their count must be [`ViewImage::expected_len`].
    fn values(&self) -> &[f32];
    /// How many values a view has for heads with `config`.
    fn expected_len(config: &HeadsConfig) -> usize;
    /// Why these values cannot be used by the heads with id `heads_id`, if they cannot.
    fn foreign_to(&self, heads_id: u64) -> Option<String>;
}

impl ViewImage for &[f32] {
    fn values(&self) -> &[f32] {
        self
    }
    fn expected_len(config: &HeadsConfig) -> usize {
        config.tokens_per_tile() * config.llm_width
    }
    fn foreign_to(&self, _: u64) -> Option<String> {
        None
    }
}

impl ViewImage for &ProjectedView {
    fn values(&self) -> &[f32] {
        &self.values
    }
    fn expected_len(config: &HeadsConfig) -> usize {
        config.tokens_per_tile() * config.hidden_width
    }
    fn foreign_to(&self, heads_id: u64) -> Option<String> {
        (self.heads_id != heads_id).then(|| "was projected by other heads (other weights)".to_string())
    }
}

/// One view's image tokens after the mapper's input projection (`tokens_per_tile × hidden_width`), made
/// by [`Heads::project_view`] as soon as the tile's features exist, so that the widest matrix product of
/// the heads runs while the language model is still writing, and the raw features (14× larger at the
/// 2B shape, 28× at 8B) need not be kept until the markers. Usable only by the heads that made it.
#[derive(Debug, Clone)]
pub struct ProjectedView {
    values: Vec<f32>,
    heads_id: u64,
}

/// Inputs for one image.
#[derive(Debug, Clone)]
pub struct HeadsInput<'a> {
    /// Tile grid columns.
    pub grid_cols: usize,
    /// Tile grid rows.
    pub grid_rows: usize,
    /// `grid_cols × grid_rows` tiles in row-major order (left to right, then top to bottom).
    pub tiles: Vec<TileFeatures<'a>>,
    /// The thumbnail: required when there is more than one tile, absent for a 1×1 grid (InternVL adds
    /// none; the single tile is then both the local and the global view).
    pub thumbnail: Option<TileFeatures<'a>>,
    /// Last-layer hidden state at the `[SCORE]` token, length W.
    pub score_hidden: &'a [f32],
    /// Width of the output maps (normally the original image width).
    pub out_width: usize,
    /// Height of the output maps.
    pub out_height: usize,
}

/// [`HeadsInput`] without the `[SCORE]` state: everything the heatmap needs, for
/// [`Heads::forward_maps`] (the server runs it as soon as the `[MAP]` states exist, while the model is
/// still writing its analysis).
#[derive(Debug, Clone)]
pub struct MapsInput<'a, I> {
    /// Tile grid columns.
    pub grid_cols: usize,
    /// Tile grid rows.
    pub grid_rows: usize,
    /// `grid_cols × grid_rows` tiles in row-major order.
    pub tiles: Vec<ViewInput<'a, I>>,
    /// The thumbnail, as in [`HeadsInput::thumbnail`].
    pub thumbnail: Option<ViewInput<'a, I>>,
    /// Width of the output maps.
    pub out_width: usize,
    /// Height of the output maps.
    pub out_height: usize,
}

/// The heatmap side of the heads' output, before the `[SCORE]` state is known: every map at output
/// size and the map scorer's `S_map`. [`Heads::score_maps`] completes it.
#[derive(Debug, Clone)]
pub struct HeadsMaps {
    rendered: render::Rendered,
    s_map: Tensor,
}

/// Results for one image; every map is `out_height × out_width`.
#[derive(Debug, Clone)]
pub struct HeadsOutput {
    /// Fused heatmap in [0, 1].
    pub heatmap: Array2<f32>,
    /// Local (stitched tiles) heatmap in [0, 1].
    pub local: Array2<f32>,
    /// Global (thumbnail) heatmap in [0, 1].
    pub global: Array2<f32>,
    /// Weight of the local map per pixel, in [0, 1] (the global one is `1 − local_weight`).
    pub local_weight: Array2<f32>,
    /// Laplace scale σ of the local map.
    pub sigma_local: Array2<f32>,
    /// Laplace scale σ of the global map.
    pub sigma_global: Array2<f32>,
    /// Calibrated plausibility score in [0, 1].
    pub score: f32,
    /// Raw (unbounded) score from the `[SCORE]` hidden state.
    pub s_token: f32,
    /// Raw (unbounded) score from the fused heatmap.
    pub s_map: f32,
}

/// The heads: configuration, parameters (as trainable candle variables) and modules.
pub struct Heads {
    config: HeadsConfig,
    varmap: VarMap,
    model: HeadsModel,
    /// Unique per instance in this process: tells a [`ProjectedView`] made by other heads.
    id: u64,
}

static NEXT_HEADS_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl std::fmt::Debug for Heads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heads").field("config", &self.config).finish_non_exhaustive()
    }
}

fn input_err(field: &'static str, reason: String) -> HeadsError {
    HeadsError::Input { field, reason }
}

/// Whether every value is finite. Branch-free (NaN and ±∞ are the values whose exponent bits are all
/// ones), so it vectorises: `iter().all(is_finite)` stops at each element to test for an early exit.
fn all_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    values.iter().fold(0u32, |bad, x| bad | ((x.to_bits() & EXPONENT) == EXPONENT) as u32) == 0
}

/// Checks one buffer's length and (except the features: [`pack_features`] checks those while copying
/// them) finiteness; `name` names it in the error.
fn check_values(name: &dyn Fn() -> String, field: &'static str, values: &[f32], len: usize) -> Result<()> {
    if values.len() != len {
        return Err(input_err(field, format!("{} has {} values, expected {len}", name(), values.len())));
    }
    if field != "features" && !all_finite(values) {
        return Err(input_err(field, format!("{} contains NaN or infinite values", name())));
    }
    Ok(())
}

/// Copies every view's features into one buffer (tiles, then the thumbnail), checking that they are
/// finite on the way: one parallel pass over the largest input (25 MB for an 8B model) instead of a
/// check and then a copy. `tiles` = how many views are tiles, for the error's name.
fn pack_features(views: &[&TileFeatures], tiles: usize) -> Result<Vec<f32>> {
    const CHUNK: usize = 16 * 1024;
    let total: usize = views.iter().map(|v| v.features.len()).sum();
    let mut out = Vec::with_capacity(total);
    let mut rest = &mut out.spare_capacity_mut()[..total];
    for (i, view) in views.iter().enumerate() {
        let (dst, tail) = rest.split_at_mut(view.features.len());
        rest = tail;
        // `all` may stop early on a bad chunk, leaving others unwritten: then the buffer is dropped unused.
        let finite = dst.par_chunks_mut(CHUNK).zip(view.features.par_chunks(CHUNK)).all(|(d, s)| {
            for (d, &s) in d.iter_mut().zip(s) {
                d.write(s);
            }
            all_finite(s)
        });
        if !finite {
            let name = if i < tiles { format!("tiles[{i}]") } else { "thumbnail".to_string() };
            return Err(input_err("features", format!("{name}.features contains NaN or infinite values")));
        }
    }
    // SAFETY: every view's `all` returned true, so every chunk was copied: all `total` values are
    // written (the views' slices tile `0..total`), and `total` ≤ capacity.
    unsafe { out.set_len(total) };
    Ok(out)
}

fn to_array(t: &Tensor) -> Result<Array2<f32>> {
    let (h, w) = t.dims2()?;
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(Array2::from_shape_vec((h, w), v).expect("tensor has h·w elements"))
}

fn to_scalar(t: &Tensor) -> Result<f32> {
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
    pub fn trainable(&self) -> Vec<(String, candle_core::Var)> {
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

    /// Checks `input` against the config: grid, tile count, thumbnail, output size, then every buffer's
    /// length and (except the features: [`pack_features`] checks those while copying them) finiteness,
    /// in order; the first problem is reported. Returns the tiles, then the thumbnail.
    fn validate<'i, 'a>(&self, input: &'i HeadsInput<'a>) -> Result<Vec<&'i TileFeatures<'a>>> {
        let geometry = (input.grid_cols, input.grid_rows, input.out_width, input.out_height);
        let views = self.validate_views(geometry, &input.tiles, input.thumbnail.as_ref())?;
        self.check_score_hidden(input.score_hidden)?;
        Ok(views)
    }

    /// [`Heads::validate`] for everything but the `[SCORE]` state; `geometry` = (grid columns, grid
    /// rows, output width, output height).
    fn validate_views<'i, 'a, I: ViewImage>(
        &self,
        (cols, rows, out_width, out_height): (usize, usize, usize, usize),
        tiles: &'i [ViewInput<'a, I>],
        thumbnail: Option<&'i ViewInput<'a, I>>,
    ) -> Result<Vec<&'i ViewInput<'a, I>>> {
        let w = self.config.llm_width;
        if cols == 0 || rows == 0 || cols * rows > MAX_TILES {
            return Err(input_err("grid", format!("{cols}×{rows} tiles; need 1..={MAX_TILES} tiles")));
        }
        if tiles.len() != cols * rows {
            return Err(input_err("tiles", format!("{} tiles given for a {cols}×{rows} grid (need {})", tiles.len(), cols * rows)));
        }
        let single = cols * rows == 1;
        match (thumbnail, single) {
            (Some(_), true) => return Err(input_err("thumbnail", "a 1×1 grid has no thumbnail".into())),
            (None, false) => return Err(input_err("thumbnail", format!("a {cols}×{rows} grid needs the thumbnail"))),
            _ => {}
        }
        for (field, side) in [("out_width", out_width), ("out_height", out_height)] {
            if side == 0 || side > MAX_OUTPUT_SIDE {
                return Err(input_err(field, format!("{side} is not in 1..={MAX_OUTPUT_SIDE}")));
            }
        }
        let views: Vec<&ViewInput<I>> = tiles.iter().chain(thumbnail).collect();
        for (i, tile) in views.iter().enumerate() {
            let name = || if i < cols * rows { format!("tiles[{i}]") } else { "thumbnail".to_string() };
            check_values(&|| format!("{}.map_hidden", name()), "map_hidden", tile.map_hidden, w)?;
            if let Some(reason) = tile.features.foreign_to(self.id) {
                return Err(input_err("features", format!("{}.features {reason}", name())));
            }
            check_values(&|| format!("{}.features", name()), "features", tile.features.values(), I::expected_len(&self.config))?;
        }
        Ok(views)
    }

    fn check_score_hidden(&self, score_hidden: &[f32]) -> Result<()> {
        check_values(&|| "score_hidden".into(), "score_hidden", score_hidden, self.config.llm_width)
    }

    /// Validates `input` against the config and packs it into tensors (tiles, then the thumbnail).
    pub fn input_tensors(&self, input: &HeadsInput) -> Result<TensorInput> {
        let views = self.validate(input)?;
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
            let views = self.validate(input)?;
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
            let views = self.validate_views((cols, rows, input.out_width, input.out_height), &input.tiles, input.thumbnail.as_ref())?;
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
        self.check_score_hidden(score_hidden)?;
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
