//! Request messages → checked images and options, in one place, whichever port they came in on.
//!
//! Every rejection names the request field at fault (`image.raw.pixels`, `images[2].encoded`,
//! `options.heatmap_width`), so a client can tell which of its inputs to fix.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use heie_proto::v1 as pb;
use image::RgbImage;

use crate::pipeline::Sampling;
use crate::pipeline::image_input::{check_raw, decode_image, from_raw, probe, ImageInputError};
use crate::pipeline::options::{MAX_HEATMAP_SIDE, MAX_TOKENS_PER_SECTION};
use crate::pipeline::options::OptionError;
use crate::pipeline::{EvalOptions, Evaluator, PreparedRequest};

use super::error::ServingError;
use super::ServingLimits;

/// What the server fills in where a request leaves a field at 0 / unset, and its hard limits.
#[derive(Debug, Clone)]
pub struct RequestDefaults {
    pub max_pixels: u64,
    /// Server's tile cap: the default and the ceiling of `Options.max_tiles`.
    pub max_tiles: u32,
    pub max_tokens_per_section: u32,
    pub max_batch: u32,
    /// `--max-message-bytes`: a RAW_F32 heatmap larger than this could never be sent.
    pub max_message_bytes: usize,
}

impl From<&ServingLimits> for RequestDefaults {
    fn from(limits: &ServingLimits) -> RequestDefaults {
        RequestDefaults {
            max_pixels: limits.max_pixels,
            max_tiles: limits.max_tiles,
            max_tokens_per_section: limits.default_max_tokens,
            max_batch: limits.max_batch,
            max_message_bytes: limits.max_message_bytes,
        }
    }
}

/// One image ready for the pipeline.
#[derive(Debug, Clone)]
pub struct ValidImage {
    pub rgb: RgbImage,
    pub generation_prompt: Option<String>,
    /// Time spent decoding it, reported as part of the evaluation's preprocessing.
    pub decode_time: std::time::Duration,
}

/// One image of a request checked as far as it can be without decoding a pixel: a source is set,
/// its declared size is within the pixel budget, an encoded file is complete. Decoding it is
/// [`PendingImage::decode`], pixel work that runs on the service's bounded pool.
#[derive(Debug)]
pub struct PendingImage {
    source: PendingSource,
    pub width: u32,
    pub height: u32,
    /// Its path in the request (`image`, `images[3]`).
    pub field: String,
    pub generation_prompt: Option<String>,
    max_pixels: u64,
}

#[derive(Debug)]
enum PendingSource {
    Encoded(Vec<u8>),
    Raw { pixels: Vec<u8>, channels: u8 },
}

impl PendingImage {
    /// Decodes (or wraps raw pixels) into RGB. CPU- and memory-heavy: call on the pixel pool.
    pub fn decode(self) -> Result<ValidImage, ServingError> {
        let started = std::time::Instant::now();
        let field = self.field;
        let rgb = match self.source {
            PendingSource::Encoded(bytes) => {
                decode_image(&bytes, self.max_pixels).map_err(|e| ServingError::invalid(format!("{field}.encoded"), e))?
            }
            PendingSource::Raw { pixels, channels } => from_raw(&pixels, self.width, self.height, channels, self.max_pixels)
                .map_err(|e| ServingError::invalid(format!("{field}.raw.pixels"), e))?,
        };
        Ok(ValidImage { rgb, generation_prompt: self.generation_prompt, decode_time: started.elapsed() })
    }
}

/// Checks a request's images without decoding them, naming each `field[i]`.
pub fn pending_images(images: Vec<pb::Image>, field: &str, defaults: &RequestDefaults) -> Result<Vec<PendingImage>, ServingError> {
    check_count(images.len(), field, defaults)?;
    images.into_iter().enumerate().map(|(i, img)| pending_image(Some(img), &format!("{field}[{i}]"), defaults)).collect()
}

/// An image count within 1..=max batch, or INVALID_ARGUMENT on `field`.
pub fn check_count(n: usize, field: &str, defaults: &RequestDefaults) -> Result<(), ServingError> {
    if n == 0 {
        return Err(ServingError::invalid(field, "at least one image is required"));
    }
    if n > defaults.max_batch as usize {
        return Err(ServingError::invalid(field, format!("{n} images is more than the server's max batch of {}", defaults.max_batch)));
    }
    Ok(())
}

/// Checks one image without decoding it; `field` is its path in the request.
pub fn pending_image(image: Option<pb::Image>, field: &str, defaults: &RequestDefaults) -> Result<PendingImage, ServingError> {
    let image = image.ok_or_else(|| ServingError::invalid(field, "an image is required"))?;
    let generation_prompt = image.generation_prompt.filter(|p| !p.trim().is_empty());
    let (source, width, height) = match image.source {
        None => return Err(ServingError::invalid(format!("{field}.source"), "set either encoded or raw")),
        Some(pb::image::Source::Encoded(bytes)) => {
            if bytes.is_empty() {
                return Err(ServingError::invalid(format!("{field}.encoded"), "is empty"));
            }
            let (w, h) = probe(&bytes, defaults.max_pixels).map_err(|e| ServingError::invalid(format!("{field}.encoded"), e))?;
            (PendingSource::Encoded(bytes), w, h)
        }
        Some(pb::image::Source::Raw(raw)) => {
            let channels = u8::try_from(raw.channels).unwrap_or(0);
            if channels != 3 && channels != 4 {
                return Err(ServingError::invalid(
                    format!("{field}.raw.channels"),
                    format!("must be 3 (RGB) or 4 (RGBA), got {}", raw.channels),
                ));
            }
            check_raw(&raw.pixels, raw.width, raw.height, channels, defaults.max_pixels).map_err(|e| {
                let sub = match &e {
                    ImageInputError::Empty { width: 0, .. } => "raw.width",
                    ImageInputError::Empty { .. } => "raw.height",
                    ImageInputError::TooLarge { .. } => "raw",
                    ImageInputError::UnsupportedChannels { .. } => "raw.channels",
                    _ => "raw.pixels",
                };
                ServingError::invalid(format!("{field}.{sub}"), e)
            })?;
            (PendingSource::Raw { pixels: raw.pixels, channels }, raw.width, raw.height)
        }
    };
    Ok(PendingImage { source, width, height, field: field.to_string(), generation_prompt, max_pixels: defaults.max_pixels })
}

/// Converts a request's images, naming each by `field` (`image`) or `field[i]` (`images`).
pub fn images(images: &[pb::Image], field: &str, defaults: &RequestDefaults) -> Result<Vec<ValidImage>, ServingError> {
    check_count(images.len(), field, defaults)?;
    images.iter().enumerate().map(|(i, img)| image(Some(img), &format!("{field}[{i}]"), defaults)).collect()
}

/// Converts one image; `field` is its path in the request (`image`, `images[3]`).
pub fn image(image: Option<&pb::Image>, field: &str, defaults: &RequestDefaults) -> Result<ValidImage, ServingError> {
    pending_image(image.cloned(), field, defaults)?.decode()
}

/// Side of the heatmaps Rerank's fast path renders and throws away.
const RERANK_HEATMAP_SIDE: u32 = 32;

/// Options shared by every image of a request, before the image fixes the heatmap size.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    base: EvalOptions,
    heatmap_width: Option<u32>,
    heatmap_height: Option<u32>,
    /// Requested heatmap encodings, deduplicated, in request order; never empty.
    pub encodings: Vec<pb::HeatmapEncoding>,
    /// Where RAW_F32_LE first stands in the request's own list (before deduplication), to name it.
    raw_f32_at: Option<usize>,
    max_message_bytes: usize,
}

/// An option error from the pipeline, named by its place in the request.
fn option_error(e: OptionError, image_field: &str) -> ServingError {
    match e.field {
        "generation_prompt" => ServingError::invalid(format!("{image_field}.generation_prompt"), e.reason),
        other => ServingError::invalid(format!("options.{other}"), e.reason),
    }
}

impl RequestOptions {
    /// The pipeline options for one image of `width × height`: its prompt and, where the request left
    /// them at 0, its size. `field` is the image's path in the request.
    pub fn for_image(&self, width: u32, height: u32, generation_prompt: Option<String>, field: &str) -> Result<EvalOptions, ServingError> {
        let heatmap_size = match (self.heatmap_width, self.heatmap_height) {
            (None, None) => None,
            (w, h) => Some((w.unwrap_or(width), h.unwrap_or(height))),
        };
        EvalOptions { heatmap_size, generation_prompt, ..self.base.clone() }.validated().map_err(|e| option_error(e, field))
    }

    /// Everything about one image that can fail before it is decoded: its options, the pipeline's
    /// checks for its size (the context budget, the heads' heatmap side) and the RAW_F32 payload.
    pub fn admit(&self, image: &PendingImage, evaluator: &Evaluator) -> Result<PreparedRequest, ServingError> {
        let eval = self.for_image(image.width, image.height, image.generation_prompt.clone(), &image.field)?;
        let prepared = evaluator.prepare(image.width, image.height, eval).map_err(|e| option_error(e, &image.field))?;
        self.check_payload(prepared.heatmap_size)?;
        Ok(prepared)
    }

    /// A RAW_F32_LE heatmap is exactly 4 bytes a pixel: one that cannot fit in a message is refused
    /// now rather than after the whole evaluation.
    pub fn check_payload(&self, (w, h): (u32, u32)) -> Result<(), ServingError> {
        let Some(i) = self.raw_f32_at else { return Ok(()) };
        let bytes = u64::from(w) * u64::from(h) * 4;
        // Room for the event's other fields.
        const ENVELOPE: u64 = 1024;
        if bytes + ENVELOPE > self.max_message_bytes as u64 {
            return Err(ServingError::invalid(
                format!("options.heatmap_encodings[{i}]"),
                format!(
                    "a RAW_F32_LE heatmap of {w}×{h} is {bytes} bytes, more than the server's --max-message-bytes {}; \
                     ask for a smaller heatmap_width/heatmap_height or a PNG encoding",
                    self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }

    pub fn explanation(&self) -> bool {
        self.base.explanation
    }

    /// Rerank's `fast`: the score only, through the pipeline's fast path. Rerank returns no heatmaps, so
    /// they are rendered small (the score does not depend on their size).
    pub fn score_only(mut self) -> Self {
        self.base.explanation = false;
        self.base.score_only = true;
        self.heatmap_width = Some(RERANK_HEATMAP_SIDE);
        self.heatmap_height = Some(RERANK_HEATMAP_SIDE);
        self
    }
}

/// Converts the options message (absent = all defaults).
pub fn options(options: Option<&pb::Options>, defaults: &RequestDefaults) -> Result<RequestOptions, ServingError> {
    let default = pb::Options::default();
    let o = options.unwrap_or(&default);
    let max_tokens = match o.max_tokens_per_section {
        0 => defaults.max_tokens_per_section,
        n if n > MAX_TOKENS_PER_SECTION => {
            return Err(ServingError::invalid(
                "options.max_tokens_per_section",
                format!("must be at most {MAX_TOKENS_PER_SECTION}, got {n}"),
            ))
        }
        n => n,
    };
    let side = |value: u32, name: &str| match value {
        0 => Ok(None),
        v if v > MAX_HEATMAP_SIDE => {
            Err(ServingError::invalid(format!("options.{name}"), format!("must be at most {MAX_HEATMAP_SIDE}, got {v}")))
        }
        v => Ok(Some(v)),
    };
    let heatmap_width = side(o.heatmap_width, "heatmap_width")?;
    let heatmap_height = side(o.heatmap_height, "heatmap_height")?;
    let mut encodings = Vec::new();
    for (i, &raw) in o.heatmap_encodings.iter().enumerate() {
        let encoding = match pb::HeatmapEncoding::try_from(raw) {
            Ok(pb::HeatmapEncoding::Unspecified) | Err(_) => {
                return Err(ServingError::invalid(
                    format!("options.heatmap_encodings[{i}]"),
                    format!("unknown heatmap encoding {raw}"),
                ))
            }
            Ok(e) => e,
        };
        if !encodings.contains(&encoding) {
            encodings.push(encoding);
        }
    }
    if encodings.is_empty() {
        encodings.push(pb::HeatmapEncoding::Png8);
    }
    if !o.temperature.is_finite() || o.temperature < 0.0 {
        return Err(ServingError::invalid("options.temperature", format!("must be >= 0, got {}", o.temperature)));
    }
    let seed = o.seed.unwrap_or_else(|| RandomState::new().build_hasher().finish());
    let max_tiles = if o.max_tiles == 0 { defaults.max_tiles } else { o.max_tiles.min(defaults.max_tiles) };
    let base = EvalOptions {
        explanation: o.explanation.unwrap_or(true),
        max_tokens_per_section: max_tokens,
        heatmap_size: None,
        sampling: Sampling { temperature: o.temperature, seed },
        max_tiles,
        ..Default::default()
    };
    let raw_f32_at = o.heatmap_encodings.iter().position(|&e| e == pb::HeatmapEncoding::RawF32Le as i32);
    Ok(RequestOptions { base, heatmap_width, heatmap_height, encodings, raw_f32_at, max_message_bytes: defaults.max_message_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RequestDefaults {
        RequestDefaults { max_pixels: 10_000, max_tiles: 6, max_tokens_per_section: 192, max_batch: 2, max_message_bytes: 1 << 20 }
    }

    fn raw(width: u32, height: u32, channels: u32, len: usize) -> pb::Image {
        pb::Image {
            source: Some(pb::image::Source::Raw(pb::RawImage { width, height, channels, pixels: vec![7; len] })),
            generation_prompt: None,
        }
    }

    fn field_of(r: Result<ValidImage, ServingError>) -> String {
        match r.unwrap_err() {
            ServingError::InvalidArgument { field, .. } => field,
            other => panic!("not an invalid argument: {other:?}"),
        }
    }

    #[test]
    fn bad_images_name_their_field() {
        let d = defaults();
        assert_eq!(field_of(image(None, "image", &d)), "image");
        let none = pb::Image { source: None, generation_prompt: None };
        assert_eq!(field_of(image(Some(&none), "image", &d)), "image.source");
        let garbage = pb::Image { source: Some(pb::image::Source::Encoded(b"nonsense".to_vec())), generation_prompt: None };
        assert_eq!(field_of(image(Some(&garbage), "images[1]", &d)), "images[1].encoded");
        assert_eq!(field_of(image(Some(&raw(0, 0, 3, 0)), "image", &d)), "image.raw.width");
        assert_eq!(field_of(image(Some(&raw(4, 4, 3, 47)), "image", &d)), "image.raw.pixels");
        assert_eq!(field_of(image(Some(&raw(4, 4, 2, 32)), "image", &d)), "image.raw.channels");
        assert_eq!(field_of(image(Some(&raw(200, 200, 3, 120_000)), "image", &d)), "image.raw");
        let ok = image(Some(&raw(4, 4, 4, 64)), "image", &d).unwrap();
        assert_eq!(ok.rgb.dimensions(), (4, 4));
        let three = vec![raw(4, 4, 3, 48); 3];
        match images(&three, "images", &d).unwrap_err() {
            ServingError::InvalidArgument { field, .. } => assert_eq!(field, "images"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_default_where_zero_and_reject_out_of_range() {
        let d = defaults();
        let o = options(None, &d).unwrap();
        assert_eq!(o.encodings, vec![pb::HeatmapEncoding::Png8]);
        let eval = o.for_image(8, 6, None, "image").unwrap();
        assert_eq!(eval.heatmap_size, None);
        assert!(eval.explanation);
        assert_eq!(eval.max_tokens_per_section, 192);

        let half = pb::Options { heatmap_width: 32, max_tiles: 99, heatmap_encodings: vec![1, 3, 1], ..Default::default() };
        let o = options(Some(&half), &d).unwrap();
        assert_eq!(o.encodings, vec![pb::HeatmapEncoding::RawF32Le, pb::HeatmapEncoding::OverlayPng]);
        let eval = o.for_image(8, 6, None, "image").unwrap();
        assert_eq!(eval.heatmap_size, Some((32, 6)), "unset side takes the image's");
        assert_eq!(eval.max_tiles, 6, "capped at the server's limit");

        let bad = |o: pb::Options| match options(Some(&o), &d).unwrap_err() {
            ServingError::InvalidArgument { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(pb::Options { max_tokens_per_section: 1_000_000, ..Default::default() }), "options.max_tokens_per_section");
        assert_eq!(bad(pb::Options { heatmap_height: 100_000, ..Default::default() }), "options.heatmap_height");
        assert_eq!(bad(pb::Options { heatmap_encodings: vec![2, 0], ..Default::default() }), "options.heatmap_encodings[1]");
        assert_eq!(bad(pb::Options { temperature: -1.0, ..Default::default() }), "options.temperature");
        let hot = options(Some(&pb::Options { temperature: 9.0, ..Default::default() }), &d).unwrap();
        match hot.for_image(8, 6, None, "image").unwrap_err() {
            ServingError::InvalidArgument { field, .. } => assert_eq!(field, "options.temperature"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_raw_f32_heatmap_that_cannot_fit_a_message_is_refused_before_any_work() {
        let d = defaults();
        let raw_f32 = pb::Options { heatmap_encodings: vec![1], ..Default::default() };
        let o = options(Some(&raw_f32), &d).unwrap();
        // 512 × 512 × 4 = 1 MiB: over the 1 MiB limit once the envelope is counted.
        let eval = o.for_image(512, 512, None, "image").unwrap();
        match o.check_payload(eval.heatmap_size.unwrap_or((512, 512))).unwrap_err() {
            ServingError::InvalidArgument { field, reason } => {
                assert_eq!(field, "options.heatmap_encodings[0]");
                assert!(reason.contains("512×512") && reason.contains("--max-message-bytes"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Named by its place in the request's own list, repeats and all.
        let repeated = pb::Options { heatmap_encodings: vec![3, 3, 1], ..Default::default() };
        let o = options(Some(&repeated), &d).unwrap();
        match o.check_payload(o.for_image(512, 512, None, "image").unwrap().heatmap_size.unwrap_or((512, 512))).unwrap_err() {
            ServingError::InvalidArgument { field, .. } => assert_eq!(field, "options.heatmap_encodings[2]"),
            other => panic!("{other:?}"),
        }
        let small = pb::Options { heatmap_width: 256, heatmap_height: 256, heatmap_encodings: vec![3, 1], ..Default::default() };
        let o = options(Some(&small), &d).unwrap();
        let eval = o.for_image(512, 512, None, "image").unwrap();
        assert!(o.check_payload(eval.heatmap_size.unwrap_or((512, 512))).is_ok());
        let png = options(None, &d).unwrap();
        assert!(png.check_payload(png.for_image(4000, 4000, None, "image").unwrap().heatmap_size.unwrap_or((4000, 4000))).is_ok(), "PNG sizes are not known in advance");
    }
}
