//! EvaluateBatch: every image submitted at once so they share the engine's slots and decode steps;
//! events interleave, each tagged with its image's index; a Ranking closes the stream.
//!
//! All images are validated before any is submitted (a bad image fails the call with the field
//! named), and if the queue cannot take them all, none runs: the call fails RESOURCE_EXHAUSTED
//! rather than returning a half-evaluated batch.

use std::sync::Arc;

use heie_proto::v1 as pb;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

use crate::pipeline::events::EventReceiver;

use super::admission::Places;
use super::evaluate::{end_stream, outcome, pump, submit, ImageEnd};
use super::events::{failed_done, EventEncoder};
use super::outgoing::{self, Outgoing};
use super::request_log::{self, RequestLog, SharedLog};
use super::{convert, deadline, EventStream, ServiceError, Shared};

type Item = pb::BatchEvent;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<pb::EvaluateBatchRequest>,
) -> Result<Response<EventStream<pb::BatchEvent>>, Status> {
    let deadline = deadline::from_metadata(request.metadata());
    let log = RequestLog::start("EvaluateBatch", request.remote_addr());
    let span = tracing::info_span!("rpc", method = "EvaluateBatch", images = request.get_ref().images.len());
    let submitted = start(&shared, request.into_inner(), deadline, &log).instrument(span.clone()).await;
    let (places, images) = match submitted {
        Ok(s) => s,
        Err(e) => {
            shared.metrics.record_request("EvaluateBatch", e.code());
            request_log::finish(&log, "rejected", e.code());
            return Err(e.into());
        }
    };
    let (out, stream) = outgoing::channel(64);
    tokio::spawn(run(shared, places, images, out, deadline, log).instrument(span));
    Ok(Response::new(Box::pin(stream)))
}

/// Takes one place per image (all or none), checks every image and the options before any is
/// decoded, then decodes and submits them one by one on the pixel pool, so at most one of the
/// batch's decoded images is held at a time.
async fn start(
    shared: &Arc<Shared>,
    request: pb::EvaluateBatchRequest,
    deadline: Option<Instant>,
    log: &SharedLog,
) -> Result<(Places, Vec<(EventReceiver, Arc<EventEncoder>)>), ServiceError> {
    let evaluator = shared.evaluator()?;
    let defaults = shared.defaults();
    let n = request.images.len();
    // Before the places: an oversized batch takes none.
    convert::check_count(n, "images", &defaults)?;
    let places = shared.admission.admit(n, "images")?;
    let job_log = log.clone();
    let setup = shared.admission.on_pixel_pool(move || {
        let images = convert::pending_images(request.images, "images", &defaults)?;
        let options = convert::options(request.options.as_ref(), &defaults)?;
        let per_image = images.iter().map(|image| options.admit(image, &evaluator)).collect::<Result<Vec<_>, _>>()?;
        // On an error the receivers collected so far drop, cancelling those images.
        images
            .into_iter()
            .zip(per_image)
            .map(|(image, eval)| {
                request_log::image(&job_log, image.width, image.height);
                submit(&evaluator, image.decode()?, eval, options.encodings.clone())
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let images = tokio::select! {
        joined = setup => joined??,
        _ = deadline::expired(deadline) => return Err(ServiceError::DeadlineExceeded),
    };
    Ok((places, images))
}

fn tagged(index: u32, event: pb::EvaluateEvent) -> Result<Item, Status> {
    Ok(pb::BatchEvent { index, payload: Some(pb::batch_event::Payload::Event(event)) })
}

async fn run(
    shared: Arc<Shared>,
    places: Places,
    images: Vec<(EventReceiver, Arc<EventEncoder>)>,
    out: Outgoing<Item>,
    deadline: Option<Instant>,
    log: SharedLog,
) {
    let n = images.len();
    let mut tasks = JoinSet::new();
    for (index, (mut events, encoder)) in images.into_iter().enumerate() {
        let (tx, shared, log) = (out.tx.clone(), shared.clone(), log.clone());
        let index = index as u32;
        tasks.spawn(
            async move {
                let end = pump(&mut events, &encoder, &tx, |e| tagged(index, e), &shared, &log).await;
                if let ImageEnd::Failed(message) = &end {
                    tracing::warn!(index, error = %message, "batch image failed");
                    let _ = tx.send(tagged(index, failed_done(message, &shared.device()))).await;
                }
                (index, end)
            }
            .in_current_span(),
        );
    }
    let all = async {
        let mut scores: Vec<Option<f32>> = vec![None; n];
        let (mut client_gone, mut refused) = (false, false);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, ImageEnd::Finished { score })) => scores[index as usize] = score,
                Ok((_, ImageEnd::ClientGone)) => client_gone = true,
                Ok((_, ImageEnd::Failed(_))) => {}
                Ok((_, ImageEnd::Refused)) => refused = true,
                Err(e) => tracing::error!(error = %e, "a batch image task panicked"),
            }
        }
        (scores, client_gone, refused)
    };
    let stall = shared.limits.stall_timeout;
    let failure = tokio::select! {
        (scores, client_gone, refused) = all => {
            if client_gone {
                Some(ServiceError::Cancelled)
            } else if refused {
                // Some images never started: the batch as a whole is to be retried elsewhere.
                Some(ServiceError::NotStarted)
            } else {
                let ranking = pb::Ranking { entries: ranking(&scores) };
                let last = pb::BatchEvent { index: 0, payload: Some(pb::batch_event::Payload::Ranking(ranking)) };
                if out.tx.send(Ok(last)).await.is_err() { Some(ServiceError::Cancelled) } else { None }
            }
        }
        _ = out.tx.closed() => Some(ServiceError::Cancelled),
        _ = out.stalled(stall) => Some(ServiceError::Stalled(stall.as_secs_f64())),
        _ = deadline::expired(deadline) => Some(ServiceError::DeadlineExceeded),
        _ = shared.stopping() => Some(ServiceError::ShuttingDown),
    };
    // Aborting the tasks drops their receivers: the engine cancels what is still running.
    tasks.abort_all();
    drop(places);
    let code = failure.as_ref().map(ServiceError::code).unwrap_or(Code::Ok);
    end_stream(&out, failure.as_ref());
    shared.metrics.record_request("EvaluateBatch", code);
    request_log::finish(&log, outcome(failure.as_ref()), code);
}

/// Scored images, best first; ties keep request order; unscored images are left out.
pub fn ranking(scores: &[Option<f32>]) -> Vec<pb::RankedImage> {
    let mut entries: Vec<pb::RankedImage> = scores
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|score| pb::RankedImage { index: i as u32, score }))
        .collect();
    // A stable sort keeps request order among equal scores.
    entries.sort_by(|a, b| b.score.total_cmp(&a.score));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_is_best_first_stable_and_skips_unscored() {
        let r = ranking(&[Some(0.2), None, Some(0.9), Some(0.2), Some(0.5)]);
        let order: Vec<u32> = r.iter().map(|e| e.index).collect();
        assert_eq!(order, vec![2, 4, 0, 3]);
        assert_eq!(r[0].score, 0.9);
    }
}
