//! What the serving API takes: one image's views (each tile and the thumbnail: its `[MAP]` state and
//! image tokens, raw or projected in advance), the grid, the output size and the `[SCORE]` state.

use crate::config::HeadsConfig;

/// Largest accepted output side, so a bad request cannot allocate gigabytes.
pub const MAX_OUTPUT_SIDE: usize = 8192;
/// Largest accepted tile grid (InternVL3 uses at most 12 tiles by default; 64 leaves ample room).
pub const MAX_TILES: usize = 64;

/// One tile's (or the thumbnail's) inputs. `I` is its image side: the raw post-projector features
/// (`&[f32]`, see [`TileFeatures`]) or, for [`Heads::forward_maps`], a [`ProjectedView`].
///
/// [`Heads::forward_maps`]: crate::Heads::forward_maps
#[derive(Debug, Clone, Copy)]
pub struct ViewInput<'a, I> {
    /// Last-layer hidden state at this tile's `[MAP]` token, length W.
    pub map_hidden: &'a [f32],
    /// The image tokens: raw features are `tokens_per_tile × W`, row-major (token grid in row-major order).
    pub features: I,
}

/// A view with its raw post-projector features.
pub type TileFeatures<'a> = ViewInput<'a, &'a [f32]>;

/// The image side of a view, raw or projected: what [`Heads`](crate::Heads) checks before using it.
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
///
/// [`Heads::project_view`]: crate::Heads::project_view
#[derive(Debug, Clone)]
pub struct ProjectedView {
    pub(crate) values: Vec<f32>,
    /// The id of the [`Heads`](crate::Heads) that made it.
    pub(crate) heads_id: u64,
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
///
/// [`Heads::forward_maps`]: crate::Heads::forward_maps
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
