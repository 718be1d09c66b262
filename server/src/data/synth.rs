//! `heie synth`: a labelled data set with exactly known defects, in the plain-folder format.
//!
//! Each image (a source image, or a procedurally drawn scene) gets 0–3 localized defects: duplicated
//! patches, elastic warps, colour blotches, smears and noise. Each defect changes pixels only inside its
//! region (hard-edged ellipse or rectangle), so the heatmap — the union of the regions — is exact.
//! Severity of one defect: `strength · (0.25 + 2·area fraction)` capped at 1; of the image:
//! `1 − Π(1 − s_i)`; the score is `1 − severity` (1 for a clean image).

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use ndarray::Array2;

use super::folder::{image_files, COT_SUFFIX, HEATMAP_SUFFIX, SCORES_FILE};
use super::DataError;

/// A small deterministic generator (SplitMix64): the same seed gives the same data set on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The kinds of injected defects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DefectKind {
    DuplicatedPatch,
    ElasticWarp,
    ColourBlotch,
    Smear,
    Noise,
}

impl DefectKind {
    pub const ALL: [DefectKind; 5] =
        [DefectKind::DuplicatedPatch, DefectKind::ElasticWarp, DefectKind::ColourBlotch, DefectKind::Smear, DefectKind::Noise];

    fn describe(self) -> &'static str {
        match self {
            DefectKind::DuplicatedPatch => "a patch repeated from elsewhere in the image",
            DefectKind::ElasticWarp => "warped, wavy geometry",
            DefectKind::ColourBlotch => "an unnatural colour blotch",
            DefectKind::Smear => "a smeared, streaky texture",
            DefectKind::Noise => "grainy noise that does not match the rest of the image",
        }
    }
}

/// One injected defect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Defect {
    pub kind: DefectKind,
    /// Bounding box `[x0, y0, x1, y1]` in pixels (exclusive end).
    pub bbox: [u32; 4],
    pub strength: f32,
    /// Share of the image's pixels in the region.
    pub area: f32,
    pub severity: f32,
}

/// One generated image with its labels.
#[derive(Debug, Clone)]
pub struct SynthImage {
    pub image: RgbImage,
    /// 1 inside the defects, 0 elsewhere; image-sized.
    pub mask: Array2<f32>,
    pub score: f32,
    pub defects: Vec<Defect>,
}

/// A float RGB canvas (0–255).
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<[f32; 3]>,
}

impl Canvas {
    fn from_image(img: &RgbImage) -> Canvas {
        Canvas {
            w: img.width() as usize,
            h: img.height() as usize,
            px: img.pixels().map(|p| [p[0] as f32, p[1] as f32, p[2] as f32]).collect(),
        }
    }

    fn to_image(&self) -> RgbImage {
        RgbImage::from_fn(self.w as u32, self.h as u32, |x, y| {
            let p = self.px[y as usize * self.w + x as usize];
            Rgb(p.map(|v| v.round().clamp(0.0, 255.0) as u8))
        })
    }

    /// Bilinear sample with clamped coordinates.
    fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        let x = x.clamp(0.0, (self.w - 1) as f32);
        let y = y.clamp(0.0, (self.h - 1) as f32);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.w - 1), (y0 + 1).min(self.h - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let at = |xx: usize, yy: usize| self.px[yy * self.w + xx];
        let mut out = [0.0; 3];
        for (c, o) in out.iter_mut().enumerate() {
            let top = at(x0, y0)[c] * (1.0 - fx) + at(x1, y0)[c] * fx;
            let bottom = at(x0, y1)[c] * (1.0 - fx) + at(x1, y1)[c] * fx;
            *o = top * (1.0 - fy) + bottom * fy;
        }
        out
    }
}

/// A region: an axis-aligned ellipse or rectangle.
#[derive(Debug, Clone, Copy)]
struct Region {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    ellipse: bool,
}

impl Region {
    fn random(rng: &mut Rng, w: usize, h: usize) -> Region {
        let side = w.min(h) as f32;
        let rx = side * rng.range(0.1, 0.22);
        let ry = side * rng.range(0.1, 0.22);
        Region {
            cx: rng.range(rx, w as f32 - rx),
            cy: rng.range(ry, h as f32 - ry),
            rx,
            ry,
            ellipse: rng.unit() < 0.5,
        }
    }

    fn contains(&self, x: usize, y: usize) -> bool {
        let dx = (x as f32 + 0.5 - self.cx) / self.rx;
        let dy = (y as f32 + 0.5 - self.cy) / self.ry;
        if self.ellipse {
            dx * dx + dy * dy <= 1.0
        } else {
            dx.abs() <= 1.0 && dy.abs() <= 1.0
        }
    }

    fn bbox(&self, w: usize, h: usize) -> [u32; 4] {
        let x0 = (self.cx - self.rx).floor().max(0.0) as u32;
        let y0 = (self.cy - self.ry).floor().max(0.0) as u32;
        let x1 = ((self.cx + self.rx).ceil() as u32).min(w as u32);
        let y1 = ((self.cy + self.ry).ceil() as u32).min(h as u32);
        [x0, y0, x1, y1]
    }

    fn pixels(&self, w: usize, h: usize) -> Vec<(usize, usize)> {
        let [x0, y0, x1, y1] = self.bbox(w, h);
        let mut out = Vec::new();
        for y in y0 as usize..y1 as usize {
            for x in x0 as usize..x1 as usize {
                if self.contains(x, y) {
                    out.push((x, y));
                }
            }
        }
        out
    }
}

/// Draws a scene: a two-colour gradient sky over a ground band, with circles, boxes and striped shapes.
pub fn draw_scene(rng: &mut Rng, width: u32, height: u32) -> RgbImage {
    let colour = |rng: &mut Rng| [rng.range(20.0, 235.0), rng.range(20.0, 235.0), rng.range(20.0, 235.0)];
    let (top, bottom, ground) = (colour(rng), colour(rng), colour(rng));
    let horizon = rng.range(0.45, 0.8) * height as f32;
    let (w, h) = (width as usize, height as usize);
    let mut c = Canvas { w, h, px: vec![[0.0; 3]; w * h] };
    for y in 0..h {
        for x in 0..w {
            let t = y as f32 / h as f32;
            let base = if (y as f32) < horizon {
                std::array::from_fn(|k| top[k] * (1.0 - t) + bottom[k] * t)
            } else {
                // Ground with a gentle texture so warps and smears have something to move.
                let tex = ((x as f32 * 0.35).sin() * (y as f32 * 0.21).cos()) * 12.0;
                std::array::from_fn(|k| ground[k] + tex)
            };
            c.px[y * w + x] = base;
        }
    }
    for _ in 0..3 + rng.below(4) {
        let shape = Region::random(rng, w, h);
        let fill = colour(rng);
        let stripes = rng.unit() < 0.4;
        let period = rng.range(4.0, 10.0);
        for (x, y) in shape.pixels(w, h) {
            let on = !stripes || ((x + y) as f32 / period).floor() as i64 % 2 == 0;
            c.px[y * w + x] = if on { fill } else { fill.map(|v| 255.0 - v) };
        }
    }
    c.to_image()
}

fn apply(kind: DefectKind, c: &mut Canvas, region: Region, strength: f32, rng: &mut Rng) {
    let (w, h) = (c.w, c.h);
    let pixels = region.pixels(w, h);
    let before = Canvas { w, h, px: c.px.clone() };
    match kind {
        DefectKind::DuplicatedPatch => {
            // Content from a region shifted by at least the region's size (wrapping inside the image).
            let dx = (region.rx * 2.0 + rng.range(0.0, w as f32 / 2.0)) * if rng.unit() < 0.5 { 1.0 } else { -1.0 };
            let dy = rng.range(-(h as f32) / 3.0, h as f32 / 3.0);
            for &(x, y) in &pixels {
                let sx = (x as f32 + dx).rem_euclid(w as f32);
                let sy = (y as f32 + dy).rem_euclid(h as f32);
                c.px[y * w + x] = before.sample(sx, sy);
            }
        }
        DefectKind::ElasticWarp => {
            let amp = 2.0 + 6.0 * strength;
            let freq = rng.range(0.15, 0.4);
            let phase = rng.range(0.0, std::f32::consts::TAU);
            for &(x, y) in &pixels {
                let (xf, yf) = (x as f32, y as f32);
                let sx = xf + amp * (yf * freq + phase).sin();
                let sy = yf + amp * (xf * freq * 0.8 + phase).cos();
                c.px[y * w + x] = before.sample(sx, sy);
            }
        }
        DefectKind::ColourBlotch => {
            let tint = [rng.range(0.0, 255.0), rng.range(0.0, 255.0), rng.range(0.0, 255.0)];
            let alpha = 0.5 + 0.45 * strength;
            for &(x, y) in &pixels {
                let p = &mut c.px[y * w + x];
                for k in 0..3 {
                    p[k] = p[k] * (1.0 - alpha) + tint[k] * alpha;
                }
            }
        }
        DefectKind::Smear => {
            let angle = rng.range(0.0, std::f32::consts::PI);
            let (ux, uy) = (angle.cos(), angle.sin());
            let length = 6.0 + 14.0 * strength;
            let steps = 12;
            for &(x, y) in &pixels {
                let mut acc = [0.0; 3];
                for s in 0..steps {
                    let t = (s as f32 / (steps - 1) as f32 - 0.5) * length;
                    let p = before.sample(x as f32 + ux * t, y as f32 + uy * t);
                    for k in 0..3 {
                        acc[k] += p[k] / steps as f32;
                    }
                }
                c.px[y * w + x] = acc;
            }
        }
        DefectKind::Noise => {
            let sigma = 25.0 + 50.0 * strength;
            for &(x, y) in &pixels {
                let p = &mut c.px[y * w + x];
                for v in p.iter_mut() {
                    *v += sigma * rng.normal();
                }
            }
        }
    }
    // Keep the stored image consistent with what was changed: clamp into the 8-bit range.
    for &(x, y) in &pixels {
        let p = &mut c.px[y * w + x];
        *p = p.map(|v| v.clamp(0.0, 255.0));
    }
}

/// Injects 0–3 defects of the given kinds (none with probability `clean_share`) into `base`.
pub fn corrupt(base: &RgbImage, rng: &mut Rng, clean_share: f32, kinds: &[DefectKind]) -> SynthImage {
    assert!(!kinds.is_empty(), "at least one defect kind");
    let (w, h) = (base.width() as usize, base.height() as usize);
    let mut canvas = Canvas::from_image(base);
    let mut mask = Array2::<f32>::zeros((h, w));
    let n = if rng.unit() < clean_share { 0 } else { 1 + rng.below(3) };
    let mut defects = Vec::with_capacity(n);
    let mut keep = 1.0f32;
    for _ in 0..n {
        let kind = kinds[rng.below(kinds.len())];
        let region = Region::random(rng, w, h);
        let strength = rng.range(0.5, 1.0);
        apply(kind, &mut canvas, region, strength, rng);
        let pixels = region.pixels(w, h);
        for &(x, y) in &pixels {
            mask[[y, x]] = 1.0;
        }
        let area = pixels.len() as f32 / (w * h) as f32;
        let severity = (strength * (0.25 + 2.0 * area)).min(1.0);
        keep *= 1.0 - severity;
        defects.push(Defect { kind, bbox: region.bbox(w, h), strength, area, severity });
    }
    SynthImage { image: canvas.to_image(), mask, score: keep.clamp(0.0, 1.0), defects }
}

/// A chain of thought in the Expl-AIGI-Eval shape describing the injected defects (for teacher forcing).
pub fn reference_cot(s: &SynthImage) -> String {
    let (w, h) = (s.image.width() as f32, s.image.height() as f32);
    let place = |b: &[u32; 4]| {
        let cx = (b[0] + b[2]) as f32 / 2.0 / w;
        let cy = (b[1] + b[3]) as f32 / 2.0 / h;
        let v = if cy < 0.33 { "top" } else if cy < 0.66 { "middle" } else { "bottom" };
        let hz = if cx < 0.33 { "left" } else if cx < 0.66 { "centre" } else { "right" };
        format!("{v} {hz}")
    };
    let regions = if s.defects.is_empty() {
        "No problematic regions.".to_string()
    } else {
        s.defects.iter().map(|d| format!("Problematic area: the {} of the image.", place(&d.bbox))).collect::<Vec<_>>().join(" ")
    };
    let analysis = if s.defects.is_empty() {
        "- The image looks consistent.".to_string()
    } else {
        s.defects.iter().map(|d| format!("- {}: {}.", place(&d.bbox), d.kind.describe())).collect::<Vec<_>>().join("\n")
    };
    format!(
        "### Image Description\nA simple scene with a sky, the ground and a few geometric shapes.\n\n\
         ### Problematic Regions Identification\n{regions}\nSo, the potential problematic regions in the image are [MAP]\n\n\
         ### Analysis of Issues\n{analysis}\nBased on the overall analysis, the plausibility score for this image is [SCORE]."
    )
}

/// Options of `heie synth`.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub count: usize,
    pub seed: u64,
    /// Side of drawn scenes; source images are scaled so their longer side is at most this.
    pub size: u32,
    pub source: Option<PathBuf>,
    pub dev_fraction: f32,
    pub test_fraction: f32,
    /// Share of images left without defects.
    pub clean_share: f32,
    /// The defect kinds drawn from (all by default).
    pub kinds: Vec<DefectKind>,
}

/// Split sizes (train, dev, test) for `count` images.
pub fn split_sizes(count: usize, dev_fraction: f32, test_fraction: f32) -> (usize, usize, usize) {
    let test = ((count as f32 * test_fraction).round() as usize).min(count);
    let dev = ((count as f32 * dev_fraction).round() as usize).min(count - test);
    (count - dev - test, dev, test)
}

/// Writes `out/{train,dev,test}/` plain folders (image, `ID.heatmap.png`, `ID.cot.txt`, `scores.csv`,
/// `defects.jsonl`). `on_image` is called after each image.
pub fn generate(config: &SynthConfig, out: &Path, mut on_image: impl FnMut()) -> Result<(usize, usize, usize), DataError> {
    let sources = match &config.source {
        Some(dir) => {
            let files = image_files(dir)?;
            if files.is_empty() {
                return Err(DataError::Invalid { path: dir.clone(), reason: "no PNG, JPEG or WebP images".into() });
            }
            files
        }
        None => Vec::new(),
    };
    let sizes = split_sizes(config.count, config.dev_fraction, config.test_fraction);
    let mut rng = Rng::new(config.seed);
    let mut index = 0usize;
    for (split, n) in [("train", sizes.0), ("dev", sizes.1), ("test", sizes.2)] {
        let dir = out.join(split);
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        let mut scores = String::from("id,score\n");
        let mut defects = String::new();
        for _ in 0..n {
            let base = match sources.get(index % sources.len().max(1)) {
                Some((_, path)) => load_source(path, config.size)?,
                None => draw_scene(&mut rng, config.size, config.size),
            };
            let s = corrupt(&base, &mut rng, config.clean_share, &config.kinds);
            let id = format!("{split}-{index:05}");
            let write = |name: String, bytes: &[u8]| -> Result<(), DataError> {
                let path = dir.join(name);
                std::fs::write(&path, bytes).map_err(|e| DataError::io(&path, e))
            };
            write(format!("{id}.png"), &png(&s.image)?)?;
            let mask = image::GrayImage::from_fn(s.image.width(), s.image.height(), |x, y| {
                image::Luma([(s.mask[[y as usize, x as usize]] * 255.0).round() as u8])
            });
            write(format!("{id}{HEATMAP_SUFFIX}"), &png(&mask)?)?;
            write(format!("{id}{COT_SUFFIX}"), reference_cot(&s).as_bytes())?;
            scores.push_str(&format!("{id},{:.6}\n", s.score));
            defects.push_str(&serde_json::json!({ "id": id, "score": s.score, "defects": s.defects }).to_string());
            defects.push('\n');
            index += 1;
            on_image();
        }
        let write_text = |name: &str, text: &str| -> Result<(), DataError> {
            let path = dir.join(name);
            let mut f = std::fs::File::create(&path).map_err(|e| DataError::io(&path, e))?;
            f.write_all(text.as_bytes()).map_err(|e| DataError::io(&path, e))
        };
        write_text(SCORES_FILE, &scores)?;
        write_text("defects.jsonl", &defects)?;
    }
    Ok(sizes)
}

fn load_source(path: &Path, max_side: u32) -> Result<RgbImage, DataError> {
    let img = image::open(path).map_err(|e| DataError::Invalid { path: path.to_path_buf(), reason: e.to_string() })?;
    let img = if img.width().max(img.height()) > max_side {
        img.resize(max_side, max_side, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    Ok(img.to_rgb8())
}

fn png<P: image::PixelWithColorType, C: std::ops::Deref<Target = [P::Subpixel]>>(
    img: &image::ImageBuffer<P, C>,
) -> Result<Vec<u8>, DataError>
where
    [P::Subpixel]: image::EncodableLayout,
{
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| DataError::Format(format!("png encoding: {e}")))?;
    Ok(bytes)
}
