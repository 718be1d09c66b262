//! Evaluate: one image, its events streamed as the engine produces them.
//!
//! The handler validates and submits on a blocking thread (decoding and tiling are CPU work), then
//! a task forwards events to the client until Done, the client leaves, the deadline passes or the
//! server stops. Whichever ends it, the request's event receiver is dropped, which is what cancels
//! the sequence on the engine thread and frees its slot.

use std::sync::Arc;

use heie_proto::v1 as pb;
use image::RgbImage;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

use crate::pipeline::events::EventReceiver;
use crate::pipeline::{EvalEvent, EvalOptions, Evaluator};

use super::events::{EventEncoder, Outgoing};
use super::metrics::ServiceMetrics;
use super::{convert, deadline, EventStream, ServiceError, Shared};

/// Wire events a stream may buffer towards a slow client before forwarding waits.
const STREAM_BUFFER: usize = 64;

/// How one image's event stream ended.
pub(crate) enum ImageEnd {
    /// Done arrived; the primary score, when one was computed.
    Finished { score: Option<f32> },
    /// The evaluation failed after it started.
    Failed(String),
    /// The client went away.
    ClientGone,
}

/// Submits one validated image (tiling runs on the calling thread: call from a blocking thread).
pub(crate) fn submit(
    evaluator: &Evaluator,
    image: Arc<RgbImage>,
    decode_time: std::time::Duration,
    options: EvalOptions,
    encodings: Vec<pb::HeatmapEncoding>,
) -> Result<(u64, EventReceiver, Arc<EventEncoder>), ServiceError> {
    let heatmap_size = options.heatmap_size;
    let (id, events) = evaluator.evaluate_decoded(&image, options, decode_time)?;
    let device = evaluator.engine().info().device.clone();
    Ok((id, events, Arc::new(EventEncoder::new(image, encodings, heatmap_size, device))))
}

/// Forwards one image's events to `out` (each through `wrap`) until Done or failure.
pub(crate) async fn pump<T: Send + 'static>(
    events: &mut EventReceiver,
    encoder: &Arc<EventEncoder>,
    out: &mpsc::Sender<T>,
    wrap: impl Fn(pb::EvaluateEvent) -> T,
    metrics: &ServiceMetrics,
) -> ImageEnd {
    let mut score = None;
    while let Some(event) = events.recv().await {
        let last = matches!(event, EvalEvent::Done { .. });
        match &event {
            EvalEvent::Score(s) if score.is_none() => score = Some(s.score),
            EvalEvent::Done { timings, tokens, .. } => {
                metrics.record_evaluation(timings, tokens);
                tracing::info!(
                    total_ms = timings.total_ms,
                    queued_ms = timings.queued_ms,
                    ttft_ms = timings.time_to_first_token_ms,
                    image_encode_ms = timings.image_encode_ms,
                    prefill_ms = timings.prefill_ms,
                    decode_ms = timings.decode_ms,
                    tokens_per_s = timings.decode_tokens_per_s,
                    generated = tokens.generated,
                    "evaluation finished"
                );
            }
            _ => {}
        }
        let outgoing = if EventEncoder::is_heavy(&event) {
            let encoder = encoder.clone();
            match tokio::task::spawn_blocking(move || encoder.encode(event)).await {
                Ok(o) => o,
                Err(e) => Outgoing::Failed(format!("encoding a heatmap failed: {e}")),
            }
        } else {
            encoder.encode(event)
        };
        match outgoing {
            Outgoing::Events(wire) => {
                for e in wire {
                    if out.send(wrap(e)).await.is_err() {
                        return ImageEnd::ClientGone;
                    }
                }
            }
            Outgoing::Failed(message) => return ImageEnd::Failed(message),
        }
        if last {
            return ImageEnd::Finished { score };
        }
    }
    ImageEnd::Failed("the evaluation ended without a result".into())
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<pb::EvaluateRequest>,
) -> Result<Response<EventStream<pb::EvaluateEvent>>, Status> {
    let deadline = deadline::from_metadata(request.metadata());
    let span = tracing::info_span!("rpc", method = "Evaluate", request_id = tracing::field::Empty);
    let started = start(&shared, request.into_inner(), deadline).instrument(span.clone()).await;
    let (events, encoder) = match started {
        Ok(s) => s,
        Err(e) => {
            shared.metrics.record_request("Evaluate", e.code());
            return Err(e.into());
        }
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(forward(shared, events, encoder, tx, deadline).instrument(span));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

async fn start(
    shared: &Arc<Shared>,
    request: pb::EvaluateRequest,
    deadline: Option<Instant>,
) -> Result<(EventReceiver, Arc<EventEncoder>), ServiceError> {
    let evaluator = shared.evaluator()?;
    let defaults = shared.defaults();
    let setup = tokio::task::spawn_blocking(move || {
        let image = convert::image(request.image.as_ref(), "image", &defaults)?;
        let options = convert::options(request.options.as_ref(), &defaults)?;
        let eval = options.for_image(&image, "image")?;
        submit(&evaluator, Arc::new(image.rgb), image.decode_time, eval, options.encodings)
    });
    let joined = tokio::select! {
        joined = setup => joined,
        _ = deadline::expired(deadline) => return Err(ServiceError::DeadlineExceeded),
    };
    let (id, events, encoder) = joined.map_err(ServiceError::internal)??;
    tracing::Span::current().record("request_id", id);
    Ok((events, encoder))
}

async fn forward(
    shared: Arc<Shared>,
    mut events: EventReceiver,
    encoder: Arc<EventEncoder>,
    out: mpsc::Sender<Result<pb::EvaluateEvent, Status>>,
    deadline: Option<Instant>,
) {
    let failure = tokio::select! {
        end = pump(&mut events, &encoder, &out, Ok, &shared.metrics) => match end {
            ImageEnd::Finished { .. } => None,
            ImageEnd::Failed(message) => Some(ServiceError::internal(message)),
            ImageEnd::ClientGone => Some(ServiceError::Cancelled),
        },
        _ = out.closed() => Some(ServiceError::Cancelled),
        _ = deadline::expired(deadline) => Some(ServiceError::DeadlineExceeded),
        _ = shared.stopping() => Some(ServiceError::ShuttingDown),
    };
    // Dropping the receiver here (not later) cancels the sequence on the engine thread at once.
    drop(events);
    let code = failure.as_ref().map(ServiceError::code).unwrap_or(Code::Ok);
    if let Some(e) = failure {
        if e.code() == Code::Cancelled {
            tracing::info!("client went away; evaluation cancelled");
        } else {
            tracing::warn!(error = %e, "evaluation ended early");
            let _ = out.send(Err(e.into())).await;
        }
    }
    shared.metrics.record_request("Evaluate", code);
}
