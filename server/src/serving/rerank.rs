//! Rerank: scores N images concurrently and answers once with their order ("generate 16, keep 4").
//! `fast` takes the pipeline's score-only path: no long explanation, a short analysis, and no step that
//! cannot change the score.

use std::net::SocketAddr;
use std::sync::Arc;

use heie_proto::v1 as pb;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::pipeline::EvalEvent;

use super::batch::ranking;
use super::call::Call;
use super::request_log::{self, SharedLog};
use super::submit::{admit_call, Admitted, Asked, Images, Submission};
use super::{expired, Serving, ServingError};

/// Scores and ranks. If the caller drops this future (its client left), every image still being
/// scored is cancelled with it.
pub async fn run(serving: Arc<Serving>, request: pb::RerankRequest, deadline: Option<Instant>, peer: Option<SocketAddr>) -> Result<pb::RerankResponse, ServingError> {
    let started = std::time::Instant::now();
    let call = Call::start(&serving, "Rerank", peer);
    let span = tracing::info_span!("rpc", method = "Rerank", images = request.images.len());
    let top_k = request.top_k;
    let asked = Asked { options: request.options, score_only: request.fast };
    let Admitted { call, places, images } = admit_call(&serving, call, Images::Many(request.images), asked, deadline, &span).await?;
    let scores = tokio::select! {
        scores = collect(images, &serving, call.log()).instrument(span) => scores,
        _ = expired(deadline) => Err(ServingError::DeadlineExceeded),
        e = serving.cancelled() => Err(e),
    };
    drop(places);
    call.ended(scores.as_ref().err());
    let scores = scores?;
    let order: Vec<u32> = ranking(&scores.iter().copied().map(Some).collect::<Vec<_>>()).iter().map(|e| e.index).collect();
    let k = if top_k == 0 { order.len() } else { (top_k as usize).min(order.len()) };
    Ok(pb::RerankResponse { top_k_indices: order[..k].to_vec(), order, scores, total_ms: started.elapsed().as_secs_f64() * 1000.0 })
}

/// Waits for every image's primary score; any failure fails the call (the rest are cancelled when
/// the join set drops their receivers).
async fn collect(images: Vec<Submission>, serving: &Arc<Serving>, log: &SharedLog) -> Result<Vec<f32>, ServingError> {
    let mut tasks = JoinSet::new();
    for (index, image) in images.into_iter().enumerate() {
        let (serving, log, mut image) = (serving.clone(), log.clone(), image);
        tasks.spawn(async move {
            let mut score = None;
            while let Some(event) = image.events.recv().await {
                request_log::event(&log, &event);
                image.done_logged |= matches!(event, EvalEvent::Done { .. });
                match event {
                    EvalEvent::Score(s) if score.is_none() => score = Some(s.score),
                    EvalEvent::Error(message) => return (index, Err(ServingError::internal(format!("image {index}: {message}")))),
                    EvalEvent::Refused => return (index, Err(ServingError::NotStarted)),
                    EvalEvent::Done { timings, tokens, .. } => serving.metrics.record_evaluation(&timings, &tokens),
                    _ => {}
                }
            }
            (index, score.ok_or_else(|| ServingError::internal(format!("image {index}: the evaluation ended without a score"))))
        });
    }
    let mut scores = vec![0.0; tasks.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(ServingError::internal)? {
            (index, Ok(score)) => scores[index] = score,
            (_, Err(e)) => return Err(e),
        }
    }
    Ok(scores)
}
