//! Rerank: scores N images concurrently and answers once with their order ("generate 16, keep 4").
//! `fast` takes the pipeline's score-only path: no long explanation, a short analysis, and no step that
//! cannot change the score.

use std::sync::Arc;

use heie_proto::v1 as pb;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

use crate::pipeline::events::EventReceiver;
use crate::pipeline::EvalEvent;

use super::admission::Places;
use super::batch::ranking;
use super::request_log::{self, RequestLog, SharedLog};
use super::{convert, deadline, ServiceError, Shared};

pub(crate) async fn handle(shared: Arc<Shared>, request: Request<pb::RerankRequest>) -> Result<Response<pb::RerankResponse>, Status> {
    let deadline = deadline::from_metadata(request.metadata());
    let log = RequestLog::start("Rerank", request.remote_addr());
    Ok(Response::new(run(shared, request.into_inner(), deadline, log).await?))
}

/// Scores and ranks, transport-neutral: the gRPC and HTTP edges both call this.
pub(crate) async fn run(shared: Arc<Shared>, request: pb::RerankRequest, deadline: Option<Instant>, log: SharedLog) -> Result<pb::RerankResponse, ServiceError> {
    let started = std::time::Instant::now();
    let span = tracing::info_span!("rpc", method = "Rerank", images = request.images.len());
    let mut admitted = false;
    let result = async {
        let (places, receivers) = start(&shared, request, &log).await?;
        admitted = true;
        let scores = tokio::select! {
            scores = collect(receivers, &shared, &log) => scores,
            _ = deadline::expired(deadline) => Err(ServiceError::DeadlineExceeded),
            _ = shared.stopping() => Err(ServiceError::ShuttingDown),
        };
        drop(places);
        scores
    }
    .instrument(span)
    .await;
    let code = result.as_ref().map(|_| Code::Ok).unwrap_or_else(|e| e.code());
    shared.metrics.record_request("Rerank", code);
    let word = match &result {
        Err(_) if !admitted => "rejected",
        Ok(_) => "completed",
        Err(e) => super::evaluate::outcome(Some(e)),
    };
    request_log::finish(&log, word, code);
    let (scores, top_k) = result?;
    let order: Vec<u32> = ranking(&scores.iter().copied().map(Some).collect::<Vec<_>>()).iter().map(|e| e.index).collect();
    let k = if top_k == 0 { order.len() } else { (top_k as usize).min(order.len()) };
    Ok(pb::RerankResponse {
        top_k_indices: order[..k].to_vec(),
        order,
        scores,
        total_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Places first (one per image, all or none), then every image checked before any is decoded, then
/// decoded and submitted one at a time on the pixel pool.
async fn start(shared: &Arc<Shared>, request: pb::RerankRequest, log: &SharedLog) -> Result<(Places, (Vec<EventReceiver>, u32)), ServiceError> {
    let evaluator = shared.evaluator()?;
    let defaults = shared.defaults();
    convert::check_count(request.images.len(), "images", &defaults)?;
    let places = shared.admission.admit(request.images.len(), "images")?;
    let top_k = request.top_k;
    let job_log = log.clone();
    let receivers = shared
        .admission
        .on_pixel_pool(move || {
            let images = convert::pending_images(request.images, "images", &defaults)?;
            let mut options = convert::options(request.options.as_ref(), &defaults)?;
            if request.fast {
                options = options.score_only();
            }
            let per_image = images.iter().map(|image| options.admit(image, &evaluator)).collect::<Result<Vec<_>, _>>()?;
            images
                .into_iter()
                .zip(per_image)
                .map(|(image, eval)| {
                    request_log::image(&job_log, image.width, image.height);
                    let image = image.decode()?;
                    evaluator.evaluate_decoded(&image.rgb, eval, image.decode_time).map(|(_, rx)| rx).map_err(ServiceError::from)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
    Ok((places, (receivers, top_k)))
}

/// Waits for every image's primary score; any failure fails the call (the rest are cancelled when
/// the join set drops their receivers).
async fn collect((receivers, top_k): (Vec<EventReceiver>, u32), shared: &Arc<Shared>, log: &SharedLog) -> Result<(Vec<f32>, u32), ServiceError> {
    let mut tasks = JoinSet::new();
    for (index, mut events) in receivers.into_iter().enumerate() {
        let (shared, log) = (shared.clone(), log.clone());
        tasks.spawn(async move {
            let mut score = None;
            while let Some(event) = events.recv().await {
                request_log::event(&log, &event);
                match event {
                    EvalEvent::Score(s) if score.is_none() => score = Some(s.score),
                    EvalEvent::Error(message) => return (index, Err(ServiceError::internal(format!("image {index}: {message}")))),
                    EvalEvent::Refused => return (index, Err(ServiceError::NotStarted)),
                    EvalEvent::Done { timings, tokens, .. } => shared.metrics.record_evaluation(&timings, &tokens),
                    _ => {}
                }
            }
            (index, score.ok_or_else(|| ServiceError::internal(format!("image {index}: the evaluation ended without a score"))))
        });
    }
    let mut scores = vec![0.0; tasks.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(ServiceError::internal)? {
            (index, Ok(score)) => scores[index] = score,
            (_, Err(e)) => return Err(e),
        }
    }
    Ok((scores, top_k))
}
