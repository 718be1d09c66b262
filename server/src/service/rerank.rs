//! Rerank: scores N images concurrently and answers once with their order ("generate 16, keep 4").
//! `fast` takes the pipeline's score-only path: no long explanation, a short analysis, and no step that
//! cannot change the score.

use std::sync::Arc;

use heie_proto::v1 as pb;
use tokio::task::JoinSet;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

use crate::pipeline::events::EventReceiver;
use crate::pipeline::EvalEvent;

use super::batch::ranking;
use super::{convert, deadline, ServiceError, Shared};

pub(crate) async fn handle(shared: Arc<Shared>, request: Request<pb::RerankRequest>) -> Result<Response<pb::RerankResponse>, Status> {
    let started = std::time::Instant::now();
    let deadline = deadline::from_metadata(request.metadata());
    let span = tracing::info_span!("rpc", method = "Rerank", images = request.get_ref().images.len());
    let result = async {
        let receivers = start(&shared, request.into_inner()).await?;
        tokio::select! {
            scores = collect(receivers, &shared) => scores,
            _ = deadline::expired(deadline) => Err(ServiceError::DeadlineExceeded),
            _ = shared.stopping() => Err(ServiceError::ShuttingDown),
        }
    }
    .instrument(span)
    .await;
    shared.metrics.record_request("Rerank", result.as_ref().map(|_| Code::Ok).unwrap_or_else(|e| e.code()));
    let (scores, top_k) = result?;
    let order: Vec<u32> = ranking(&scores.iter().copied().map(Some).collect::<Vec<_>>()).iter().map(|e| e.index).collect();
    let k = if top_k == 0 { order.len() } else { (top_k as usize).min(order.len()) };
    Ok(Response::new(pb::RerankResponse {
        top_k_indices: order[..k].to_vec(),
        order,
        scores,
        total_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}

async fn start(shared: &Arc<Shared>, request: pb::RerankRequest) -> Result<(Vec<EventReceiver>, u32), ServiceError> {
    let evaluator = shared.evaluator()?;
    let defaults = shared.defaults();
    let top_k = request.top_k;
    tokio::task::spawn_blocking(move || {
        let images = convert::images(&request.images, "images", &defaults)?;
        let mut options = convert::options(request.options.as_ref(), &defaults)?;
        if request.fast {
            options = options.score_only();
        }
        let per_image = images
            .iter()
            .enumerate()
            .map(|(i, image)| options.for_image(image, &format!("images[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let receivers = images
            .iter()
            .zip(per_image)
            .map(|(image, eval)| evaluator.evaluate_decoded(&image.rgb, eval, image.decode_time).map(|(_, rx)| rx).map_err(ServiceError::from))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((receivers, top_k))
    })
    .await
    .map_err(ServiceError::internal)?
}

/// Waits for every image's primary score; any failure fails the call (the rest are cancelled when
/// the join set drops their receivers).
async fn collect((receivers, top_k): (Vec<EventReceiver>, u32), shared: &Arc<Shared>) -> Result<(Vec<f32>, u32), ServiceError> {
    let mut tasks = JoinSet::new();
    for (index, mut events) in receivers.into_iter().enumerate() {
        let shared = shared.clone();
        tasks.spawn(async move {
            let mut score = None;
            while let Some(event) = events.recv().await {
                match event {
                    EvalEvent::Score(s) if score.is_none() => score = Some(s.score),
                    EvalEvent::Error(message) => return (index, Err(message)),
                    EvalEvent::Done { timings, tokens, .. } => shared.metrics.record_evaluation(&timings, &tokens),
                    _ => {}
                }
            }
            (index, score.ok_or_else(|| "the evaluation ended without a score".to_string()))
        });
    }
    let mut scores = vec![0.0; tasks.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(ServiceError::internal)? {
            (index, Ok(score)) => scores[index] = score,
            (index, Err(message)) => return Err(ServiceError::internal(format!("image {index}: {message}"))),
        }
    }
    Ok((scores, top_k))
}
