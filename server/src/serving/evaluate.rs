//! Evaluate: one image, its events streamed as the engine produces them.
//!
//! The call takes its place first (RESOURCE_EXHAUSTED when there is none, before a byte is decoded),
//! then checks, decodes and queues the image on the pixel pool; a task forwards events to the
//! client until Done, the client leaves or stalls, the deadline passes or the server stops. Whichever
//! ends it, the image's event receiver is dropped, which is what cancels the sequence on the engine
//! thread and frees its slot; the place is freed with it.

use std::net::SocketAddr;
use std::sync::Arc;

use heie_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::pipeline::EvalEvent;

use super::admission::Places;
use super::call::Call;
use super::encode::Outgoing as Encoded;
use super::outgoing::{self, OutStream, Outgoing};
use super::request_log::{self, SharedLog};
use super::submit::{admit_call, Admitted, Asked, Images, Submission};
use super::{expired, Serving, ServingError};

/// Wire events a stream may buffer towards a slow client before forwarding waits.
const STREAM_BUFFER: usize = 64;

/// An evaluation's events as they come; the stream ends after Done or one error. Dropping it
/// cancels the evaluation.
pub type Events = OutStream<pb::EvaluateEvent>;

/// Checks and queues one evaluation. Fails before anything streams (bad image, no free place, not
/// ready); later failures end the stream.
pub async fn open(serving: Arc<Serving>, request: pb::EvaluateRequest, deadline: Option<Instant>, peer: Option<SocketAddr>) -> Result<Events, ServingError> {
    let call = Call::start(&serving, "Evaluate", peer);
    let span = tracing::info_span!("rpc", method = "Evaluate", request_id = tracing::field::Empty);
    let asked = Asked { options: request.options, score_only: false };
    let Admitted { call, places, mut images } = admit_call(&serving, call, Images::One(request.image), asked, deadline, &span).await?;
    let image = images.pop().expect("one image was submitted");
    let (out, stream) = outgoing::channel(STREAM_BUFFER);
    tokio::spawn(forward(serving, call, places, image, out, deadline).instrument(span));
    Ok(stream)
}

async fn forward(serving: Arc<Serving>, call: Call, places: Places, mut image: Submission, out: Outgoing<pb::EvaluateEvent>, deadline: Option<Instant>) {
    let stall = serving.limits.stall_timeout;
    let failure = tokio::select! {
        end = pump(&mut image, &out.tx, Ok, &serving, call.log()) => match end {
            ImageEnd::Finished { .. } => None,
            ImageEnd::Failed(message) => Some(serving.failure(message)),
            ImageEnd::ClientGone => Some(ServingError::Cancelled),
            ImageEnd::Refused => Some(ServingError::NotStarted),
        },
        _ = out.tx.closed() => Some(ServingError::Cancelled),
        _ = out.stalled(stall) => Some(ServingError::Stalled(stall.as_secs_f64())),
        _ = expired(deadline) => Some(ServingError::DeadlineExceeded),
        e = serving.cancelled() => Some(e),
    };
    // Dropping the receiver and the places here (not later) cancels the sequence on the engine
    // thread at once and lets the next request in.
    drop(image);
    drop(places);
    end_stream(&out, failure.as_ref());
    call.ended(failure.as_ref());
}

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

/// Forwards one image's events to `out` (each through `wrap`) until Done or failure, counting and
/// logging them; heatmaps are encoded on the pixel pool.
pub(crate) async fn pump<T: Send + 'static>(
    image: &mut Submission,
    out: &mpsc::Sender<T>,
    wrap: impl Fn(pb::EvaluateEvent) -> T,
    serving: &Serving,
    log: &SharedLog,
) -> ImageEnd {
    let mut score = None;
    while let Some(event) = image.events.recv().await {
        let last = matches!(event, EvalEvent::Done { .. });
        request_log::event(log, &event);
        image.done_logged |= last;
        match &event {
            EvalEvent::Score(s) if score.is_none() => score = Some(s.score),
            EvalEvent::Done { timings, tokens, .. } => serving.metrics.record_evaluation(timings, tokens),
            _ => {}
        }
        let encoded = if super::encode::EventEncoder::is_heavy(&event) {
            let encoder = image.encoder.clone();
            match serving.admission.on_pixel_pool(move || encoder.encode(event)).await {
                Ok(o) => o,
                Err(e) => Encoded::Failed(format!("encoding a heatmap failed: {e}")),
            }
        } else {
            image.encoder.encode(event)
        };
        match encoded {
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

/// Sends a failure as the stream's last item, never waiting on the client; a client that left gets
/// nothing.
pub(crate) fn end_stream<T>(out: &Outgoing<T>, failure: Option<&ServingError>) {
    match failure {
        None | Some(ServingError::Cancelled) => {}
        Some(e) => {
            if !matches!(e, ServingError::Stalled(_)) {
                tracing::warn!(error = %e, "evaluation ended early");
            }
            out.fail(e.clone());
        }
    }
}
