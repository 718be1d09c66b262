//! Evaluate: one image, its events streamed as the engine produces them.
//!
//! The handler takes the request's place first (RESOURCE_EXHAUSTED when there is none, before a
//! byte is decoded), then checks, decodes and submits it on the pixel pool; a task forwards events
//! to the client until Done, the client leaves or stalls, the deadline passes or the server stops.
//! Whichever ends it, the request's event receiver is dropped, which is what cancels the sequence
//! on the engine thread and frees its slot; the place is freed with it.

use std::sync::Arc;

use heie_proto::v1 as pb;
use image::imageops::FilterType;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

use crate::pipeline::events::EventReceiver;
use crate::pipeline::{EvalEvent, EvalOptions, Evaluator};

use super::admission::Places;
use super::convert::ValidImage;
use super::events::{EventEncoder, Outgoing as Encoded};
use super::outgoing::{self, OutStream, Outgoing};
use super::request_log::{self, RequestLog, SharedLog};
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
    /// The evaluation never started: the server began shutting down while it was queued.
    Refused,
}

/// Submits one decoded image (tiling runs on the calling thread: call on the pixel pool). Only an
/// overlay needs the picture later, and then only at the heatmap's size; otherwise the decoded image
/// is freed here, once its tiles are cut.
pub(crate) fn submit(
    evaluator: &Evaluator,
    image: ValidImage,
    options: EvalOptions,
    encodings: Vec<pb::HeatmapEncoding>,
) -> Result<(EventReceiver, Arc<EventEncoder>), ServiceError> {
    let (width, height) = image.rgb.dimensions();
    let heatmap_size = options.heatmap_size.unwrap_or((width, height));
    let overlay_base = encodings.contains(&pb::HeatmapEncoding::OverlayPng).then(|| {
        if heatmap_size == (width, height) {
            Arc::new(image.rgb.clone())
        } else {
            Arc::new(image::imageops::resize(&image.rgb, heatmap_size.0, heatmap_size.1, FilterType::Triangle))
        }
    });
    let (_, events) = evaluator.evaluate_decoded(&image.rgb, options, image.decode_time)?;
    let device = evaluator.engine().info().device.clone();
    Ok((events, Arc::new(EventEncoder::new((width, height), overlay_base, encodings, heatmap_size, device))))
}

/// Forwards one image's events to `out` (each through `wrap`) until Done or failure.
pub(crate) async fn pump<T: Send + 'static>(
    events: &mut EventReceiver,
    encoder: &Arc<EventEncoder>,
    out: &mpsc::Sender<T>,
    wrap: impl Fn(pb::EvaluateEvent) -> T,
    shared: &Shared,
    log: &SharedLog,
) -> ImageEnd {
    let mut score = None;
    while let Some(event) = events.recv().await {
        let last = matches!(event, EvalEvent::Done { .. });
        request_log::event(log, &event);
        match &event {
            EvalEvent::Score(s) if score.is_none() => score = Some(s.score),
            EvalEvent::Done { timings, tokens, .. } => shared.metrics.record_evaluation(timings, tokens),
            _ => {}
        }
        let outgoing = if EventEncoder::is_heavy(&event) {
            let encoder = encoder.clone();
            match shared.admission.on_pixel_pool(move || encoder.encode(event)).await {
                Ok(o) => o,
                Err(e) => Encoded::Failed(format!("encoding a heatmap failed: {e}")),
            }
        } else {
            encoder.encode(event)
        };
        match outgoing {
            Encoded::Events(wire) => {
                for e in wire {
                    if out.send(wrap(e)).await.is_err() {
                        return ImageEnd::ClientGone;
                    }
                }
            }
            Encoded::Failed(message) => return ImageEnd::Failed(message),
            Encoded::Refused => return ImageEnd::Refused,
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
    let log = RequestLog::start("Evaluate", request.remote_addr());
    let events = open(shared, request.into_inner(), deadline, log).await?;
    Ok(Response::new(Box::pin(events)))
}

/// An evaluation's wire events as they come; the stream ends after Done or one error status.
/// Dropping it cancels the evaluation.
pub(crate) type Events = OutStream<pb::EvaluateEvent>;

/// Validates and submits one evaluation, transport-neutral: the gRPC and HTTP edges both call this.
/// Fails before anything streams (bad image, no free place, not ready); later failures end the stream.
pub(crate) async fn open(shared: Arc<Shared>, request: pb::EvaluateRequest, deadline: Option<Instant>, log: SharedLog) -> Result<Events, ServiceError> {
    let span = tracing::info_span!("rpc", method = "Evaluate", request_id = tracing::field::Empty);
    let started = start(&shared, request, deadline, &log).instrument(span.clone()).await;
    let (places, events, encoder) = match started {
        Ok(s) => s,
        Err(e) => {
            shared.metrics.record_request("Evaluate", e.code());
            request_log::finish(&log, "rejected", e.code());
            return Err(e);
        }
    };
    let (out, stream) = outgoing::channel(STREAM_BUFFER);
    tokio::spawn(forward(shared, places, events, encoder, out, deadline, log).instrument(span));
    Ok(stream)
}

async fn start(
    shared: &Arc<Shared>,
    request: pb::EvaluateRequest,
    deadline: Option<Instant>,
    log: &SharedLog,
) -> Result<(Places, EventReceiver, Arc<EventEncoder>), ServiceError> {
    let evaluator = shared.evaluator()?;
    // The place first: a request the server cannot take costs nothing more.
    let places = shared.admission.admit(1, "image")?;
    let defaults = shared.defaults();
    let job_log = log.clone();
    let setup = shared.admission.on_pixel_pool(move || {
        let pending = convert::pending_image(request.image, "image", &defaults)?;
        let options = convert::options(request.options.as_ref(), &defaults)?;
        let eval = options.admit(&pending, &evaluator)?;
        request_log::image(&job_log, pending.width, pending.height);
        submit(&evaluator, pending.decode()?, eval, options.encodings)
    });
    let (events, encoder) = tokio::select! {
        joined = setup => joined??,
        _ = deadline::expired(deadline) => return Err(ServiceError::DeadlineExceeded),
    };
    Ok((places, events, encoder))
}

async fn forward(
    shared: Arc<Shared>,
    places: Places,
    mut events: EventReceiver,
    encoder: Arc<EventEncoder>,
    out: Outgoing<pb::EvaluateEvent>,
    deadline: Option<Instant>,
    log: SharedLog,
) {
    let stall = shared.limits.stall_timeout;
    let failure = tokio::select! {
        end = pump(&mut events, &encoder, &out.tx, Ok, &shared, &log) => match end {
            ImageEnd::Finished { .. } => None,
            ImageEnd::Failed(message) => Some(shared.failure(message)),
            ImageEnd::ClientGone => Some(ServiceError::Cancelled),
            ImageEnd::Refused => Some(ServiceError::NotStarted),
        },
        _ = out.tx.closed() => Some(ServiceError::Cancelled),
        _ = out.stalled(stall) => Some(ServiceError::Stalled(stall.as_secs_f64())),
        _ = deadline::expired(deadline) => Some(ServiceError::DeadlineExceeded),
        _ = shared.stopping() => Some(ServiceError::ShuttingDown),
    };
    // Dropping the receiver and the places here (not later) cancels the sequence on the engine
    // thread at once and lets the next request in.
    drop(events);
    drop(places);
    let code = failure.as_ref().map(ServiceError::code).unwrap_or(Code::Ok);
    end_stream(&out, failure.as_ref());
    shared.metrics.record_request("Evaluate", code);
    request_log::finish(&log, outcome(failure.as_ref()), code);
}

/// Sends a failure's status, never waiting on the client; a client that left gets nothing.
pub(crate) fn end_stream<T>(out: &Outgoing<T>, failure: Option<&ServiceError>) {
    match failure {
        None | Some(ServiceError::Cancelled) => {}
        Some(e) => {
            if !matches!(e, ServiceError::Stalled(_)) {
                tracing::warn!(error = %e, "evaluation ended early");
            }
            out.fail(e.clone().into());
        }
    }
}

/// The request log's word for how a stream ended.
pub(crate) fn outcome(failure: Option<&ServiceError>) -> &'static str {
    match failure {
        None => "completed",
        Some(ServiceError::Cancelled) => "cancelled",
        Some(ServiceError::Stalled(_)) => "stalled",
        Some(ServiceError::DeadlineExceeded) => "deadline",
        Some(ServiceError::ShuttingDown) => "shutdown",
        Some(_) => "failed",
    }
}
