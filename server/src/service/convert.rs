//! Wire requests → validated inputs, in one place. Inner layers never re-check what passes here.
//!
//! Every rejection names the request field at fault (`image.raw.pixels`, `images[2].encoded`,
//! `options.heatmap_width`), so a client can tell which of its inputs to fix.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use heie_proto::v1 as pb;
use image::RgbImage;

use crate::engine::Sampling;
use crate::pipeline::image_input::{decode_image, from_raw, ImageInputError};
use crate::pipeline::options::{MAX_HEATMAP_SIDE, MAX_TOKENS_PER_SECTION};
use crate::pipeline::EvalOptions;

use super::status::ServiceError;

/// What the server fills in where a request leaves a field at 0 / unset, and its hard limits.
#[derive(Debug, Clone)]
pub struct RequestDefaults {
    pub max_pixels: u64,
    /// Server's tile cap: the default and the ceiling of `Options.max_tiles`.
    pub max_tiles: u32,
    pub max_tokens_per_section: u32,
    pub max_batch: u32,
}

/// One image ready for the pipeline.
#[derive(Debug, Clone)]
pub struct ValidImage {
    pub rgb: RgbImage,
    pub generation_prompt: Option<String>,
    /// Time spent decoding it, reported as part of the evaluation's preprocessing.
    pub decode_time: std::time::Duration,
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
}

impl RequestOptions {
    /// The pipeline options for one image: its prompt and, where the request left them at 0, its size.
    pub fn for_image(&self, image: &ValidImage, field: &str) -> Result<EvalOptions, ServiceError> {
        let heatmap_size = match (self.heatmap_width, self.heatmap_height) {
            (None, None) => None,
            (w, h) => Some((w.unwrap_or(image.rgb.width()), h.unwrap_or(image.rgb.height()))),
        };
        EvalOptions { heatmap_size, generation_prompt: image.generation_prompt.clone(), ..self.base.clone() }
            .validated()
            .map_err(|e| match e.field {
                "generation_prompt" => ServiceError::invalid(format!("{field}.generation_prompt"), e.reason),
                other => ServiceError::invalid(format!("options.{other}"), e.reason),
            })
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

/// Converts a request's images, naming each by `field` (`image`) or `field[i]` (`images`).
pub fn images(images: &[pb::Image], field: &str, defaults: &RequestDefaults) -> Result<Vec<ValidImage>, ServiceError> {
    if images.is_empty() {
        return Err(ServiceError::invalid(field, "at least one image is required"));
    }
    if images.len() > defaults.max_batch as usize {
        return Err(ServiceError::invalid(
            field,
            format!("{} images is more than the server's max batch of {}", images.len(), defaults.max_batch),
        ));
    }
    images.iter().enumerate().map(|(i, img)| image(Some(img), &format!("{field}[{i}]"), defaults)).collect()
}

/// Converts one image; `field` is its path in the request (`image`, `images[3]`).
pub fn image(image: Option<&pb::Image>, field: &str, defaults: &RequestDefaults) -> Result<ValidImage, ServiceError> {
    let image = image.ok_or_else(|| ServiceError::invalid(field, "an image is required"))?;
    let started = std::time::Instant::now();
    let rgb = match &image.source {
        None => return Err(ServiceError::invalid(format!("{field}.source"), "set either encoded or raw")),
        Some(pb::image::Source::Encoded(bytes)) => {
            if bytes.is_empty() {
                return Err(ServiceError::invalid(format!("{field}.encoded"), "is empty"));
            }
            decode_image(bytes, defaults.max_pixels).map_err(|e| ServiceError::invalid(format!("{field}.encoded"), e))?
        }
        Some(pb::image::Source::Raw(raw)) => {
            let channels = u8::try_from(raw.channels).unwrap_or(0);
            if channels != 3 && channels != 4 {
                return Err(ServiceError::invalid(
                    format!("{field}.raw.channels"),
                    format!("must be 3 (RGB) or 4 (RGBA), got {}", raw.channels),
                ));
            }
            from_raw(&raw.pixels, raw.width, raw.height, channels, defaults.max_pixels).map_err(|e| {
                let sub = match &e {
                    ImageInputError::Empty { width: 0, .. } => "raw.width",
                    ImageInputError::Empty { .. } => "raw.height",
                    ImageInputError::TooLarge { .. } => "raw",
                    ImageInputError::UnsupportedChannels { .. } => "raw.channels",
                    _ => "raw.pixels",
                };
                ServiceError::invalid(format!("{field}.{sub}"), e)
            })?
        }
    };
    let generation_prompt = image.generation_prompt.clone().filter(|p| !p.trim().is_empty());
    Ok(ValidImage { rgb, generation_prompt, decode_time: started.elapsed() })
}

/// Converts the options message (absent = all defaults).
pub fn options(options: Option<&pb::Options>, defaults: &RequestDefaults) -> Result<RequestOptions, ServiceError> {
    let default = pb::Options::default();
    let o = options.unwrap_or(&default);
    let max_tokens = match o.max_tokens_per_section {
        0 => defaults.max_tokens_per_section,
        n if n > MAX_TOKENS_PER_SECTION => {
            return Err(ServiceError::invalid(
                "options.max_tokens_per_section",
                format!("must be at most {MAX_TOKENS_PER_SECTION}, got {n}"),
            ))
        }
        n => n,
    };
    let side = |value: u32, name: &str| match value {
        0 => Ok(None),
        v if v > MAX_HEATMAP_SIDE => {
            Err(ServiceError::invalid(format!("options.{name}"), format!("must be at most {MAX_HEATMAP_SIDE}, got {v}")))
        }
        v => Ok(Some(v)),
    };
    let heatmap_width = side(o.heatmap_width, "heatmap_width")?;
    let heatmap_height = side(o.heatmap_height, "heatmap_height")?;
    let mut encodings = Vec::new();
    for (i, &raw) in o.heatmap_encodings.iter().enumerate() {
        let encoding = match pb::HeatmapEncoding::try_from(raw) {
            Ok(pb::HeatmapEncoding::Unspecified) | Err(_) => {
                return Err(ServiceError::invalid(
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
        return Err(ServiceError::invalid("options.temperature", format!("must be >= 0, got {}", o.temperature)));
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
    Ok(RequestOptions { base, heatmap_width, heatmap_height, encodings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RequestDefaults {
        RequestDefaults { max_pixels: 10_000, max_tiles: 6, max_tokens_per_section: 192, max_batch: 2 }
    }

    fn raw(width: u32, height: u32, channels: u32, len: usize) -> pb::Image {
        pb::Image {
            source: Some(pb::image::Source::Raw(pb::RawImage { width, height, channels, pixels: vec![7; len] })),
            generation_prompt: None,
        }
    }

    fn field_of(r: Result<ValidImage, ServiceError>) -> String {
        match r.unwrap_err() {
            ServiceError::InvalidArgument { field, .. } => field,
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
            ServiceError::InvalidArgument { field, .. } => assert_eq!(field, "images"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_default_where_zero_and_reject_out_of_range() {
        let d = defaults();
        let o = options(None, &d).unwrap();
        assert_eq!(o.encodings, vec![pb::HeatmapEncoding::Png8]);
        let img = image(Some(&raw(8, 6, 3, 144)), "image", &d).unwrap();
        let eval = o.for_image(&img, "image").unwrap();
        assert_eq!(eval.heatmap_size, None);
        assert!(eval.explanation);
        assert_eq!(eval.max_tokens_per_section, 192);

        let half = pb::Options { heatmap_width: 32, max_tiles: 99, heatmap_encodings: vec![1, 3, 1], ..Default::default() };
        let o = options(Some(&half), &d).unwrap();
        assert_eq!(o.encodings, vec![pb::HeatmapEncoding::RawF32Le, pb::HeatmapEncoding::OverlayPng]);
        let eval = o.for_image(&img, "image").unwrap();
        assert_eq!(eval.heatmap_size, Some((32, 6)), "unset side takes the image's");
        assert_eq!(eval.max_tiles, 6, "capped at the server's limit");

        let bad = |o: pb::Options| match options(Some(&o), &d).unwrap_err() {
            ServiceError::InvalidArgument { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(pb::Options { max_tokens_per_section: 1_000_000, ..Default::default() }), "options.max_tokens_per_section");
        assert_eq!(bad(pb::Options { heatmap_height: 100_000, ..Default::default() }), "options.heatmap_height");
        assert_eq!(bad(pb::Options { heatmap_encodings: vec![2, 0], ..Default::default() }), "options.heatmap_encodings[1]");
        assert_eq!(bad(pb::Options { temperature: -1.0, ..Default::default() }), "options.temperature");
        let hot = options(Some(&pb::Options { temperature: 9.0, ..Default::default() }), &d).unwrap();
        match hot.for_image(&img, "image").unwrap_err() {
            ServiceError::InvalidArgument { field, .. } => assert_eq!(field, "options.temperature"),
            other => panic!("{other:?}"),
        }
    }
}
