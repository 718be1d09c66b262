//! The one submit path, for one image or many: take the places first (all or none, before a byte is
//! decoded), then — on the pixel pool — check every image and the options before any is decoded,
//! and decode and queue them one at a time, so at most one of a request's decoded images is held at
//! once. Evaluate, EvaluateBatch and Rerank, on either port, all come through here.

use std::sync::Arc;

use heie_proto::v1 as pb;
use image::imageops::FilterType;
use tokio::time::Instant;

use crate::pipeline::events::{EventReceiver, GeneratedTokens};
use crate::pipeline::{Evaluator, PreparedRequest};

use tracing::Instrument as _;

use super::admission::Places;
use super::call::Call;
use super::encode::EventEncoder;
use super::request_log::{self, SharedLog};
use super::requests::{self, ValidImage};
use super::{expired, Serving, ServingError};

/// The images of a request, as its message holds them (one image is named `image` in errors, many
/// `images[i]`).
pub(crate) enum Images {
    One(Option<pb::Image>),
    Many(Vec<pb::Image>),
}

/// What a request asks for, beyond its images.
pub(crate) struct Asked {
    pub options: Option<pb::Options>,
    /// Rerank's `fast`: the score only, through the pipeline's score-only path.
    pub score_only: bool,
}

/// One queued image: its events as the engine produces them, and their encoder. Dropped before its
/// Done was logged (the call was cancelled, stalled or timed out), it adds the tokens its model had
/// written to the call's log line, so a cancelled stream does not read `generated_tokens=0`.
pub(crate) struct Submission {
    pub events: EventReceiver,
    pub encoder: Arc<EventEncoder>,
    /// Set once the image's Done (which carries the engine's token counts) went into the log.
    pub done_logged: bool,
    generated: GeneratedTokens,
    log: SharedLog,
}

impl Drop for Submission {
    fn drop(&mut self) {
        if !self.done_logged {
            request_log::unfinished(&self.log, self.generated.get());
        }
    }
}

/// Admits, checks, decodes and queues a request's images. Fails before anything is queued when
/// any image or option is bad (the field named), when the places are taken, or at the deadline; on
/// a failure the images queued so far are cancelled (their receivers drop).
pub(crate) async fn submit(
    serving: &Arc<Serving>,
    images: Images,
    asked: Asked,
    deadline: Option<Instant>,
    log: &SharedLog,
) -> Result<(Places, Vec<Submission>), ServingError> {
    let evaluator = serving.evaluator()?;
    let defaults = serving.defaults();
    let (n, field) = match &images {
        Images::One(_) => (1, "image"),
        Images::Many(all) => {
            // Before the places: an oversized batch takes none.
            requests::check_count(all.len(), "images", &defaults)?;
            (all.len(), "images")
        }
    };
    // The places first: a request the server cannot take costs nothing more.
    let places = serving.admission.admit(n, field)?;
    let log = log.clone();
    let setup = serving.admission.on_pixel_pool(move || {
        let pending = match images {
            Images::One(image) => vec![requests::pending_image(image, "image", &defaults)?],
            Images::Many(all) => requests::pending_images(all, "images", &defaults)?,
        };
        let mut options = requests::options(asked.options.as_ref(), &defaults)?;
        if asked.score_only {
            options = options.score_only();
        }
        let per_image = pending.iter().map(|image| options.admit(image, &evaluator)).collect::<Result<Vec<_>, _>>()?;
        pending
            .into_iter()
            .zip(per_image)
            .map(|(image, eval)| {
                request_log::image(&log, image.width, image.height);
                queue(&evaluator, image.decode()?, eval, options.encodings.clone(), &log)
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let submissions = tokio::select! {
        joined = setup => joined??,
        _ = expired(deadline) => return Err(ServingError::DeadlineExceeded),
    };
    Ok((places, submissions))
}

/// A call's images, admitted and queued: the call goes on with its places and submissions.
pub(crate) struct Admitted {
    pub call: Call,
    pub places: Places,
    pub images: Vec<Submission>,
}

/// [`submit`] for a call (in its span): a refusal is written to the call's log line and metrics
/// before it is returned, so every call records the same way.
pub(crate) async fn admit_call(
    serving: &Arc<Serving>,
    call: Call,
    images: Images,
    asked: Asked,
    deadline: Option<Instant>,
    span: &tracing::Span,
) -> Result<Admitted, ServingError> {
    match submit(serving, images, asked, deadline, call.log()).instrument(span.clone()).await {
        Ok((places, images)) => Ok(Admitted { call, places, images }),
        Err(e) => {
            call.rejected(&e);
            Err(e)
        }
    }
}

/// Queues one decoded image (tiling runs on the calling thread: the pixel pool). Only an overlay
/// needs the picture later, and then only at the heatmap's size; otherwise the decoded image is
/// freed here, once its tiles are cut.
fn queue(
    evaluator: &Evaluator,
    image: ValidImage,
    prepared: PreparedRequest,
    encodings: Vec<pb::HeatmapEncoding>,
    log: &SharedLog,
) -> Result<Submission, ServingError> {
    let (width, height) = image.rgb.dimensions();
    let heatmap_size = prepared.heatmap_size;
    let overlay_base = encodings.contains(&pb::HeatmapEncoding::OverlayPng).then(|| {
        if heatmap_size == (width, height) {
            Arc::new(image.rgb.clone())
        } else {
            Arc::new(image::imageops::resize(&image.rgb, heatmap_size.0, heatmap_size.1, FilterType::Triangle))
        }
    });
    let (_, events) = evaluator.evaluate_prepared(&image.rgb, prepared, image.decode_time)?;
    let device = evaluator.info().device.clone();
    let encoder = Arc::new(EventEncoder::new((width, height), overlay_base, encodings, heatmap_size, device));
    let generated = events.generated_tokens();
    Ok(Submission { events, encoder, done_logged: false, generated, log: log.clone() })
}
