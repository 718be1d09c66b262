//! The request log: one info line per RPC (target `heie::request`), written when it ends however it
//! ends — completed, failed, cancelled, stalled or refused at admission.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;


use crate::pipeline::EvalEvent;

use super::code::Code;

/// What one RPC did, gathered as it runs.
#[derive(Debug)]
pub(crate) struct RequestLog {
    rpc: &'static str,
    peer: Option<SocketAddr>,
    started: Instant,
    request_ids: Vec<u64>,
    /// `W×H` of each image, in request order.
    images: Vec<(u32, u32)>,
    tiles: u32,
    prompt_tokens: u32,
    image_tokens: u32,
    generated_tokens: u32,
    /// The longest wait for a slot among the request's images.
    queue_ms: f64,
}

/// A log shared by the tasks of one RPC (a batch's images run in tasks of their own).
pub(crate) type SharedLog = Arc<Mutex<RequestLog>>;

impl RequestLog {
    pub fn start(rpc: &'static str, peer: Option<SocketAddr>) -> SharedLog {
        Arc::new(Mutex::new(RequestLog {
            rpc,
            peer,
            started: Instant::now(),
            request_ids: Vec::new(),
            images: Vec::new(),
            tiles: 0,
            prompt_tokens: 0,
            image_tokens: 0,
            generated_tokens: 0,
            queue_ms: 0.0,
        }))
    }
}

fn lock(log: &SharedLog) -> std::sync::MutexGuard<'_, RequestLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes an admitted image's size.
pub(crate) fn image(log: &SharedLog, width: u32, height: u32) {
    lock(log).images.push((width, height));
}

/// Notes what an evaluation event tells: its id and tiles when it starts, its tokens when done.
pub(crate) fn event(log: &SharedLog, event: &EvalEvent) {
    let mut log = lock(log);
    match event {
        EvalEvent::Started { request_id, tiling, .. } => {
            log.request_ids.push(*request_id);
            log.tiles += tiling.n_tiles() + u32::from(tiling.has_thumbnail);
        }
        EvalEvent::Done { timings, tokens, .. } => {
            log.prompt_tokens += tokens.prompt;
            log.image_tokens += tokens.image;
            log.generated_tokens += tokens.generated;
            log.queue_ms = log.queue_ms.max(timings.queued_ms);
        }
        _ => {}
    }
}

/// Notes the tokens an image's model wrote before its call ended without its Done (cancelled, stalled,
/// past its deadline): the engine's own count never arrives then.
pub(crate) fn unfinished(log: &SharedLog, generated: u32) {
    lock(log).generated_tokens += generated;
}

/// Writes the line. `outcome` says how the RPC ended in a word (`completed`, `rejected`,
/// `cancelled`, `stalled`, `failed`, …); `code` is the status it ended with.
pub(crate) fn finish(log: &SharedLog, outcome: &str, code: Code) {
    let log = lock(log);
    let ids = log.request_ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let images = log.images.iter().map(|(w, h)| format!("{w}x{h}")).collect::<Vec<_>>().join(",");
    tracing::info!(
        target: "heie::request",
        rpc = log.rpc,
        request_id = %ids,
        peer = %log.peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        image = %images,
        tiles = log.tiles,
        prompt_tokens = log.prompt_tokens,
        image_tokens = log.image_tokens,
        generated_tokens = log.generated_tokens,
        queue_ms = (log.queue_ms * 10.0).round() / 10.0,
        total_ms = (log.started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0,
        outcome,
        status = code.name(),
        "request"
    );
}
