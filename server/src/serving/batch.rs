//! EvaluateBatch: every image submitted at once so they share the engine's slots and decode steps;
//! events interleave, each tagged with its image's index; a Ranking closes the stream.
//!
//! All images are validated before any is submitted (a bad image fails the call with the field
//! named), and if the queue cannot take them all, none runs: the call fails RESOURCE_EXHAUSTED
//! rather than returning a half-evaluated batch.

use std::net::SocketAddr;
use std::sync::Arc;

use heie_proto::v1 as pb;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::admission::Places;
use super::call::Call;
use super::encode::failed_done;
use super::evaluate::{end_stream, pump, ImageEnd};
use super::outgoing::{self, OutStream, Outgoing};
use super::submit::{admit_call, Admitted, Asked, Images, Submission};
use super::{expired, Serving, ServingError};

type Item = pb::BatchEvent;

/// A batch's events as they come, a Ranking last; dropping it cancels every image still running.
pub type BatchEvents = OutStream<pb::BatchEvent>;

/// Checks and queues every image of a batch (all or none). Fails before anything streams.
pub async fn open(serving: Arc<Serving>, request: pb::EvaluateBatchRequest, deadline: Option<Instant>, peer: Option<SocketAddr>) -> Result<BatchEvents, ServingError> {
    let call = Call::start(&serving, "EvaluateBatch", peer);
    let span = tracing::info_span!("rpc", method = "EvaluateBatch", images = request.images.len());
    let asked = Asked { options: request.options, score_only: false };
    let Admitted { call, places, images } = admit_call(&serving, call, Images::Many(request.images), asked, deadline, &span).await?;
    let (out, stream) = outgoing::channel(64);
    tokio::spawn(run(serving, call, places, images, out, deadline).instrument(span));
    Ok(stream)
}

fn tagged(index: u32, event: pb::EvaluateEvent) -> Result<Item, ServingError> {
    Ok(pb::BatchEvent { index, payload: Some(pb::batch_event::Payload::Event(event)) })
}

async fn run(serving: Arc<Serving>, call: Call, places: Places, images: Vec<Submission>, out: Outgoing<Item>, deadline: Option<Instant>) {
    let n = images.len();
    let mut tasks = JoinSet::new();
    for (index, mut image) in images.into_iter().enumerate() {
        let (tx, serving, log) = (out.tx.clone(), serving.clone(), call.log().clone());
        let index = index as u32;
        tasks.spawn(
            async move {
                let end = pump(&mut image, &tx, |e| tagged(index, e), &serving, &log).await;
                if let ImageEnd::Failed(message) = &end {
                    tracing::warn!(index, error = %message, "batch image failed");
                    let _ = tx.send(tagged(index, failed_done(message, &serving.device()))).await;
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
    let stall = serving.limits.stall_timeout;
    let failure = tokio::select! {
        (scores, client_gone, refused) = all => {
            if client_gone {
                Some(ServingError::Cancelled)
            } else if refused {
                // Some images never started: the batch as a whole is to be retried elsewhere.
                Some(ServingError::NotStarted)
            } else {
                let ranking = pb::Ranking { entries: ranking(&scores) };
                let last = pb::BatchEvent { index: 0, payload: Some(pb::batch_event::Payload::Ranking(ranking)) };
                if out.tx.send(Ok(last)).await.is_err() { Some(ServingError::Cancelled) } else { None }
            }
        }
        _ = out.tx.closed() => Some(ServingError::Cancelled),
        _ = out.stalled(stall) => Some(ServingError::Stalled(stall.as_secs_f64())),
        _ = expired(deadline) => Some(ServingError::DeadlineExceeded),
        e = serving.cancelled() => Some(e),
    };
    // Aborting the tasks drops their receivers: the engine cancels what is still running. Waiting for
    // them to end makes sure their images' tokens are in the log before its line is written.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(places);
    end_stream(&out, failure.as_ref());
    call.ended(failure.as_ref());
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
