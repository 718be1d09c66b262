//! The calibration file (`heie-calibration/1`): small JSON a person can read, written by
//! `heie calibrate` and loaded by `heie serve/eval --calibration`. Loading checks everything, and an
//! error names the field.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::features::CATEGORY_COUNT;
use super::fit::{ExampleCounts, Fitted, HeldOut, LAMBDA};
use super::isotonic::Isotonic;
use super::map::{CalibrationMap, LOGIT_CLIP};
use crate::pipeline::region_category::RegionCategory;

/// The `format` value this version writes and reads.
pub const FORMAT: &str = "heie-calibration/1";

/// The file's content, field for field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    pub format: String,
    /// When it was fitted, UTC (RFC 3339).
    pub created: String,
    /// The models whose scores it was fitted on; a calibration means little on another model's scores.
    pub fitted_with: FittedWith,
    pub examples: ExampleCounts,
    pub isotonic: Knots,
    /// See `map::LOGIT_CLIP`.
    pub logit_clip: f64,
    pub weights: Weights,
    /// The L2 penalty it was fitted with (see `fit::LAMBDA`).
    pub lambda: f64,
    pub held_out: HeldOut,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FittedWith {
    pub llm: String,
    pub mmproj: String,
    /// The heads file's name, when the scores came from trained heads.
    pub heads: Option<String>,
    /// `zero-shot` or `trained`.
    pub mode: String,
}

/// The isotonic map's knots: `x` raw scores (strictly increasing), `y` P(keep) (non-decreasing).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Knots {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub bias: f64,
    /// Weight of logit(clip(isotonic(score))); at least 0.
    pub score: f64,
    pub severity: SeverityWeights,
}

/// One weight per region category, by name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeverityWeights {
    pub hand: f64,
    pub face: f64,
    pub body: f64,
    pub text: f64,
    pub object: f64,
    pub physics: f64,
    pub background: f64,
    pub other: f64,
}

impl SeverityWeights {
    fn from_array(w: [f64; CATEGORY_COUNT]) -> SeverityWeights {
        let [hand, face, body, text, object, physics, background, other] = w;
        SeverityWeights { hand, face, body, text, object, physics, background, other }
    }

    /// In `RegionCategory::ALL` order.
    fn to_array(&self) -> [f64; CATEGORY_COUNT] {
        [self.hand, self.face, self.body, self.text, self.object, self.physics, self.background, self.other]
    }
}

impl CalibrationFile {
    /// The file for a fresh fit.
    pub fn new(fitted: &Fitted, fitted_with: FittedWith) -> CalibrationFile {
        let Fitted { map, report } = fitted;
        CalibrationFile {
            format: FORMAT.into(),
            created: utc_now(),
            fitted_with,
            examples: report.examples.clone(),
            isotonic: Knots { x: map.isotonic.x.clone(), y: map.isotonic.y.clone() },
            logit_clip: LOGIT_CLIP,
            weights: Weights { bias: map.bias, score: map.score_weight, severity: SeverityWeights::from_array(map.severity_weights) },
            lambda: LAMBDA,
            held_out: report.held_out.clone(),
        }
    }

    /// Reads and checks a file; the error names the file and the field.
    pub fn load(path: &Path) -> Result<CalibrationFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("calibration {}: {e}", path.display()))?;
        CalibrationFile::parse(&text).map_err(|e| format!("calibration {}: {e}", path.display()))
    }

    /// Parses and checks the JSON text.
    pub fn parse(text: &str) -> Result<CalibrationFile, String> {
        // The format first, so another kind of JSON gets "not a calibration file" rather than a missing field.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => return Err(format!("format is {other:?}; this heie reads {FORMAT:?}")),
            None => return Err(format!("format: missing; not a calibration file (expected format {FORMAT:?})")),
        }
        let file: CalibrationFile =
            serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        file.validate()?;
        Ok(file)
    }

    /// Writes the file (pretty JSON).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The calibration function it describes.
    pub fn map(&self) -> CalibrationMap {
        CalibrationMap {
            isotonic: Isotonic { x: self.isotonic.x.clone(), y: self.isotonic.y.clone() },
            bias: self.weights.bias,
            score_weight: self.weights.score,
            severity_weights: self.weights.severity.to_array(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        Isotonic { x: self.isotonic.x.clone(), y: self.isotonic.y.clone() }.validate()?;
        if self.logit_clip != LOGIT_CLIP {
            return Err(format!("logit_clip is {}; format {FORMAT} fixes it at {LOGIT_CLIP}", self.logit_clip));
        }
        let mut numbers = vec![("weights.bias", self.weights.bias), ("weights.score", self.weights.score), ("lambda", self.lambda)];
        let severity = self.weights.severity.to_array();
        let severity_fields: Vec<String> = RegionCategory::ALL.iter().map(|c| format!("weights.severity.{}", c.name())).collect();
        numbers.extend(severity_fields.iter().map(String::as_str).zip(severity));
        let h = &self.held_out;
        numbers.extend([
            ("held_out.auc_before", h.auc_before),
            ("held_out.auc_after", h.auc_after),
            ("held_out.accuracy_before", h.accuracy_before),
            ("held_out.accuracy_after", h.accuracy_after),
            ("held_out.threshold_before", h.threshold_before),
            ("held_out.threshold_after", h.threshold_after),
        ]);
        if let Some((field, _)) = numbers.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("{field} is not a finite number"));
        }
        if self.weights.score < 0.0 {
            return Err(format!("weights.score is {}; it must be at least 0 (a better raw score must never calibrate lower)", self.weights.score));
        }
        if self.lambda < 0.0 {
            return Err("lambda must be at least 0".into());
        }
        let shares = [
            ("held_out.auc_before", h.auc_before),
            ("held_out.auc_after", h.auc_after),
            ("held_out.accuracy_before", h.accuracy_before),
            ("held_out.accuracy_after", h.accuracy_after),
        ];
        if let Some((field, v)) = shares.iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
            return Err(format!("{field} is {v}; it must be in [0, 1]"));
        }
        if self.examples.train == 0 {
            return Err("examples.train is 0; a calibration needs examples".into());
        }
        Ok(())
    }
}

/// Now, UTC, as `2026-12-07T16:40:05Z`.
fn utc_now() -> String {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard Hinnant's
/// well-known algorithm, written out here).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::features::Features;
    use crate::calibration::fit::{fit_calibration, Example};

    fn fitted_file() -> CalibrationFile {
        let examples: Vec<Example> = (0..16)
            .map(|n| Example { name: format!("{n:02}"), features: Features::score_only(n as f32 / 16.0), kept: n >= 8 })
            .collect();
        let fitted = fit_calibration(&examples).unwrap();
        let with = FittedWith { llm: "fixture.gguf".into(), mmproj: "mmproj.gguf".into(), heads: None, mode: "zero-shot".into() };
        CalibrationFile::new(&fitted, with)
    }

    #[test]
    fn a_written_file_reads_back_the_same_and_calibrates_the_same() {
        let file = fitted_file();
        let text = serde_json::to_string_pretty(&file).unwrap();
        let back = CalibrationFile::parse(&text).unwrap();
        assert_eq!(back, file);
        for s in [0.0, 0.3, 0.5, 0.9] {
            assert_eq!(back.map().calibrate(&Features::score_only(s)), file.map().calibrate(&Features::score_only(s)));
        }
        assert!(file.created.ends_with('Z') && file.created.len() == 20, "{}", file.created);
    }

    #[test]
    fn every_broken_field_is_named() {
        let file = fitted_file();
        let broken = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut value = serde_json::to_value(&file).unwrap();
            edit(&mut value);
            CalibrationFile::parse(&value.to_string()).unwrap_err()
        };
        assert!(broken(&|v| v["format"] = "heie-calibration/9".into()).contains("heie-calibration/9"));
        assert!(broken(&|v| { v.as_object_mut().unwrap().remove("format"); }).contains("not a calibration file"));
        assert!(broken(&|v| v["isotonic"]["y"] = serde_json::json!([0.5])).contains("isotonic.y"));
        assert!(broken(&|v| {
            v["isotonic"]["x"] = serde_json::json!([0.6, 0.2]);
            v["isotonic"]["y"] = serde_json::json!([0.1, 0.9]);
        })
        .contains("isotonic.x must increase"));
        assert!(broken(&|v| {
            v["isotonic"]["x"] = serde_json::json!([0.2, 0.6]);
            v["isotonic"]["y"] = serde_json::json!([0.9, 0.1]);
        })
        .contains("isotonic.y must not decrease"));
        assert!(broken(&|v| v["weights"]["severity"]["hand"] = "NaN".into()).contains("weights.severity.hand"));
        assert!(broken(&|v| { v["weights"]["severity"].as_object_mut().unwrap().remove("text"); }).contains("weights.severity"));
        assert!(broken(&|v| v["weights"]["score"] = (-1.0).into()).contains("weights.score"));
        assert!(broken(&|v| v["held_out"]["auc_after"] = 1.5.into()).contains("held_out.auc_after"));
        assert!(broken(&|v| v["logit_clip"] = 0.2.into()).contains("logit_clip"));
        assert!(broken(&|v| v["surprise"] = 1.into()).contains("surprise"));
        assert!(CalibrationFile::parse("{").unwrap_err().contains("not JSON"));
        // A number too large for f64 is refused by the JSON reader or as not finite.
        let mut value = serde_json::to_value(&file).unwrap();
        value["weights"]["bias"] = serde_json::json!(1);
        let text = value.to_string().replace("\"bias\":1", "\"bias\":1e999");
        assert!(CalibrationFile::parse(&text).is_err());
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }
}
