//! One preparation per request: everything about an evaluation that is decided before a pixel is
//! decoded — its checked options, its tile grid, its tokens (the chat text after the image, a
//! reference's sections), its heatmap size and its context budget — worked out once by
//! [`super::Evaluator::prepare`] and from then on only read: by the serving core's payload check,
//! by tiling, by the program and by the event encoder. Nothing downstream decides any of it again.

use crate::engine::Token;

use super::cot_plan::ContextBudget;
use super::options::{EvalOptions, OptionError};
use super::reference::ReferenceTokens;
use super::tiling::TileGrid;

/// A request ready to be queued once its image is decoded.
#[derive(Debug)]
pub struct PreparedRequest {
    /// The checked options.
    pub options: EvalOptions,
    /// The image's size, as people see it (the decoded image must have it).
    pub image_size: (u32, u32),
    /// The size every heatmap of this request is rendered and sent at: the one asked for, else the
    /// image's (clamped, aspect kept, to the trained heads' largest side when they render it).
    pub heatmap_size: (u32, u32),
    /// The tiles the image will be cut into.
    pub grid: TileGrid,
    /// The worst-case context the request can take; within `--ctx-size` per sequence.
    pub budget: ContextBudget,
    /// The chat text after the image (the client's prompt included), tokenised.
    pub(super) after_image: Vec<Token>,
    /// The reference chain of thought, tokenised, when teacher forcing.
    pub(super) reference: Option<ReferenceTokens>,
}

impl PreparedRequest {
    /// Image views (tiles plus the thumbnail, which only a grid of more than one tile has).
    pub fn n_views(&self) -> usize {
        views(&self.grid)
    }
}

/// Tiles plus the thumbnail InternVL adds when there is more than one tile.
pub(super) fn views(grid: &TileGrid) -> usize {
    grid.n_tiles() as usize + usize::from(grid.n_tiles() != 1)
}

/// The option to lower when a request's worst case does not fit `available` cells, and why.
pub(super) fn context_error(budget: &ContextBudget, available: usize, n_views: usize, tokens_per_tile: usize) -> OptionError {
    let field = if budget.fixed_text + budget.image + budget.generated <= available {
        "generation_prompt"
    } else if budget.fixed_text + budget.image + budget.user_text >= available {
        "max_tiles"
    } else {
        "max_tokens_per_section"
    };
    OptionError {
        field,
        reason: format!(
            "the request can take {} context tokens ({n_views} image views × {tokens_per_tile} + {} prompt + {} generated) but the \
             server's --ctx-size gives each request {available}; lower {field}",
            budget.total(),
            budget.fixed_text + budget.user_text,
            budget.generated,
        ),
    }
}
