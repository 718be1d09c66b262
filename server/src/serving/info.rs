//! GetInfo: what the server runs and the limits it enforces. Cheap; never touches the engine thread.

use std::sync::Arc;

use heie_proto::v1 as pb;

use crate::pipeline::score_band::SCORE_BANDS;
use crate::pipeline::options::{MAX_GENERATION_PROMPT_BYTES, MAX_HEATMAP_SIDE, MAX_TEMPERATURE};

use super::encode::{heads_mode, prompt_mode};
use super::{Serving, ServingError};

/// GetInfo, transport-neutral, counted in the metrics and written to the request log: the gRPC and
/// HTTP edges both call this, so `/v1/info` leaves the same line as the RPC.
pub fn get(serving: &Arc<Serving>, peer: Option<std::net::SocketAddr>) -> Result<pb::ServerInfo, ServingError> {
    let call = super::call::Call::start(serving, "GetInfo", peer);
    let result = server_info(serving);
    match &result {
        Ok(_) => call.ended(None),
        Err(e) => call.rejected(e),
    }
    result
}

fn server_info(serving: &Serving) -> Result<pb::ServerInfo, ServingError> {
    let evaluator = serving.evaluator()?;
    let info = evaluator.info();
    let limits = &serving.limits;
    Ok(pb::ServerInfo {
        llm_model: info.llm_name.clone(),
        mmproj_model: info.mmproj_name.clone(),
        llm_width: info.n_embd as u32,
        tile_size: info.tile_size,
        tokens_per_tile: info.tokens_per_tile as u32,
        heads_mode: heads_mode(evaluator.output_mode()) as i32,
        prompt_mode: prompt_mode(evaluator.prompt_mode()) as i32,
        limits: Some(pb::Limits {
            max_pixels: limits.max_pixels,
            max_batch: limits.max_batch,
            parallel_slots: info.slots,
            max_message_bytes: limits.max_message_bytes as u64,
            max_tiles: limits.max_tiles,
            max_queue: limits.max_queue,
            max_heatmap_side: MAX_HEATMAP_SIDE,
            max_generation_prompt_bytes: MAX_GENERATION_PROMPT_BYTES as u32,
            max_tokens_per_section: evaluator.max_tokens_that_fit(),
            default_max_tokens_per_section: limits.default_max_tokens,
            context_tokens: info.ctx_per_sequence,
            max_temperature: MAX_TEMPERATURE,
            stall_timeout_ms: limits.stall_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
        }),
        version: env!("CARGO_PKG_VERSION").to_string(),
        device: info.device.clone(),
        calibration: evaluator.calibration().map(|c| pb::Calibration {
            name: c.name.clone(),
            examples: c.file.examples.train,
            auc_before: c.file.held_out.auc_before,
            auc_after: c.file.held_out.auc_after,
        }),
        score_bands: SCORE_BANDS
            .iter()
            .map(|band| pb::ScoreBand { name: band.name.into(), lower: band.lower, meaning: band.meaning.into() })
            .collect(),
    })
}
