//! EvaluateBatch: every image submitted at once so they share the engine's slots and decode steps;
//! events interleave, each tagged with its image's index; a Ranking closes the stream.
//!
//! All images are validated before any is submitted (a bad image fails the call with the field
//! named), and if the queue cannot take them all, none runs: the call fails RESOURCE_EXHAUSTED
//! rather than returning a half-evaluated batch.

use std::sync::Arc;

use heie_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

use crate::pipeline::events::EventReceiver;

use super::evaluate::{pump, submit, ImageEnd};
use super::events::{failed_done, EventEncoder};
use super::{convert, deadline, EventStream, ServiceError, Shared};

type Item = Result<pb::BatchEvent, Status>;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<pb::EvaluateBatchRequest>,
) -> Result<Response<EventStream<pb::BatchEvent>>, Status> {
    let deadline = deadline::from_metadata(request.metadata());
    let span = tracing::info_span!("rpc", method = "EvaluateBatch", images = request.get_ref().images.len());
    let submitted = start(&shared, request.into_inner(), deadline).instrument(span.clone()).await;
    let images = match submitted {
        Ok(images) => images,
        Err(e) => {
            shared.metrics.record_request("EvaluateBatch", e.code());
            return Err(e.into());
        }
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(shared, images, tx, deadline).instrument(span));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// Validates every image, then submits them all (or none).
async fn start(
    shared: &Arc<Shared>,
    request: pb::EvaluateBatchRequest,
    deadline: Option<Instant>,
) -> Result<Vec<(EventReceiver, Arc<EventEncoder>)>, ServiceError> {
    let evaluator = shared.evaluator()?;
    let defaults = shared.defaults();
    let setup = tokio::task::spawn_blocking(move || {
        let images = convert::images(&request.images, "images", &defaults)?;
        let options = convert::options(request.options.as_ref(), &defaults)?;
        let per_image = images
            .iter()
            .enumerate()
            .map(|(i, image)| options.for_image(image, &format!("images[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        // On an error the receivers collected so far drop, cancelling those images.
        images
            .into_iter()
            .zip(per_image)
            .map(|(image, eval)| {
                submit(&evaluator, Arc::new(image.rgb), image.decode_time, eval, options.encodings.clone()).map(|(_, rx, enc)| (rx, enc))
            })
            .collect()
    });
    tokio::select! {
        joined = setup => joined.map_err(ServiceError::internal)?,
        _ = deadline::expired(deadline) => Err(ServiceError::DeadlineExceeded),
    }
}

fn tagged(index: u32, event: pb::EvaluateEvent) -> Item {
    Ok(pb::BatchEvent { index, payload: Some(pb::batch_event::Payload::Event(event)) })
}

async fn run(shared: Arc<Shared>, images: Vec<(EventReceiver, Arc<EventEncoder>)>, out: mpsc::Sender<Item>, deadline: Option<Instant>) {
    let n = images.len();
    let mut tasks = JoinSet::new();
    for (index, (mut events, encoder)) in images.into_iter().enumerate() {
        let (out, shared) = (out.clone(), shared.clone());
        let index = index as u32;
        tasks.spawn(
            async move {
                let end = pump(&mut events, &encoder, &out, |e| tagged(index, e), &shared.metrics).await;
                if let ImageEnd::Failed(message) = &end {
                    tracing::warn!(index, error = %message, "batch image failed");
                    let _ = out.send(tagged(index, failed_done(message, &shared.device()))).await;
                }
                (index, end)
            }
            .in_current_span(),
        );
    }
    let all = async {
        let mut scores: Vec<Option<f32>> = vec![None; n];
        let mut client_gone = false;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, ImageEnd::Finished { score })) => scores[index as usize] = score,
                Ok((_, ImageEnd::ClientGone)) => client_gone = true,
                Ok((_, ImageEnd::Failed(_))) => {}
                Err(e) => tracing::error!(error = %e, "a batch image task panicked"),
            }
        }
        (scores, client_gone)
    };
    let failure = tokio::select! {
        (scores, client_gone) = all => {
            if client_gone {
                Some(ServiceError::Cancelled)
            } else {
                let ranking = pb::Ranking { entries: ranking(&scores) };
                let last = pb::BatchEvent { index: 0, payload: Some(pb::batch_event::Payload::Ranking(ranking)) };
                if out.send(Ok(last)).await.is_err() { Some(ServiceError::Cancelled) } else { None }
            }
        }
        _ = out.closed() => Some(ServiceError::Cancelled),
        _ = deadline::expired(deadline) => Some(ServiceError::DeadlineExceeded),
        _ = shared.stopping() => Some(ServiceError::ShuttingDown),
    };
    // Aborting the tasks drops their receivers: the engine cancels what is still running.
    tasks.abort_all();
    let code = failure.as_ref().map(ServiceError::code).unwrap_or(Code::Ok);
    if let Some(e) = failure {
        if e.code() != Code::Cancelled {
            let _ = out.send(Err(e.into())).await;
        }
    }
    shared.metrics.record_request("EvaluateBatch", code);
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
