//! `heie calibrate --labels CSV`: the rows `heie-score` wrote, with the user's keep/reject decision in
//! one column, read back as calibration examples without judging any image again.
//!
//! Columns used: `file`, `score` (the raw score: heie-score writes `uncalibrated_score` too when the
//! server applied a calibration, and that one is used then), `error`, `severity_hand` …
//! `severity_other` (empty = no region of that kind), and the label column (`--label-column`,
//! default `label`): `keep`/`reject` (also `1`/`0`, `yes`/`no`, `true`/`false`). Rows without a
//! label, with an error or without a score are skipped and counted.

use std::path::Path;

use crate::calibration::fit::Example;
use crate::calibration::Features;
use crate::pipeline::region_category::RegionCategory;

/// The examples of a labelled CSV and how many rows were left out, and why.
#[derive(Debug, Default)]
pub struct LabelledRows {
    pub examples: Vec<Example>,
    pub unlabelled: usize,
    pub unscored: usize,
    /// The `mode` column's value (`zero-shot` or `trained`) when every used row has the same one.
    pub mode: Option<String>,
}

/// Reads `path`; errors name the line and column.
pub fn read_labelled(path: &Path, label_column: &str) -> Result<LabelledRows, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_labelled(&text, label_column).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_labelled(text: &str, label_column: &str) -> Result<LabelledRows, String> {
    let mut records = parse_csv(text)?.into_iter();
    let header = records.next().ok_or("empty file; expected heie-score's CSV with a header line")?;
    let column = |name: &str| header.iter().position(|h| h.trim() == name);
    let file_col = column("file").ok_or("no `file` column; is this heie-score's CSV?")?;
    let score_col = column("score").ok_or("no `score` column; is this heie-score's CSV?")?;
    let label_col = column(label_column).ok_or_else(|| {
        format!("no `{label_column}` column; add one with keep or reject per image (or name yours with --label-column)")
    })?;
    let raw_col = column("uncalibrated_score");
    let error_col = column("error");
    let mode_col = column("mode");
    let severity_cols: Vec<(RegionCategory, Option<usize>)> =
        RegionCategory::ALL.iter().map(|&c| (c, column(&format!("severity_{}", c.name())))).collect();
    if severity_cols.iter().all(|(_, col)| col.is_none()) {
        tracing::warn!("the CSV has no severity_<category> columns (an older heie-score?): the calibration sees the score only");
    }

    let mut rows = LabelledRows::default();
    let mut modes: Vec<String> = Vec::new();
    for (index, record) in records.enumerate() {
        let line = index + 2;
        let cell = |col: usize| record.get(col).map(|s| s.trim()).unwrap_or("");
        let name = cell(file_col).to_string();
        if name.is_empty() {
            continue;
        }
        let kept = match cell(label_col).to_ascii_lowercase().as_str() {
            "" => {
                rows.unlabelled += 1;
                continue;
            }
            "keep" | "kept" | "1" | "yes" | "true" => true,
            "reject" | "rejected" | "0" | "no" | "false" => false,
            other => return Err(format!("line {line}, column {label_column}: {other:?} is neither keep nor reject")),
        };
        let score_text = raw_col.map(cell).filter(|s| !s.is_empty()).unwrap_or(cell(score_col));
        if score_text.is_empty() || error_col.is_some_and(|c| !cell(c).is_empty()) {
            rows.unscored += 1;
            continue;
        }
        let number = |text: &str, what: &str| -> Result<f32, String> {
            match text.parse::<f32>() {
                Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
                _ => Err(format!("line {line}, column {what}: {text:?} is not a number in [0, 1]")),
            }
        };
        let score = number(score_text, "score")?;
        let mut regions = Vec::new();
        for (category, col) in &severity_cols {
            let text = col.map(cell).unwrap_or("");
            if !text.is_empty() {
                regions.push((*category, number(text, &format!("severity_{}", category.name()))?));
            }
        }
        if let Some(mode) = mode_col.map(cell).filter(|m| !m.is_empty()) {
            if !modes.iter().any(|m| m == mode) {
                modes.push(mode.to_string());
            }
        }
        rows.examples.push(Example { name, features: Features::from_regions(score, regions), kept });
    }
    rows.mode = if modes.len() == 1 { modes.pop() } else { None };
    Ok(rows)
}

/// RFC 4180 records: fields separated by commas, quoted fields may hold commas, newlines and `""`.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                line += usize::from(c == '\n');
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                line += 1;
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {line}: a quoted field is never closed"));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records.retain(|r| !(r.len() == 1 && r[0].is_empty()));
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_commas_quotes_and_newlines() {
        let records = parse_csv("a,b,c\r\n1,\"x, \"\"y\"\"\nz\",3\n\n").unwrap();
        assert_eq!(records, [vec!["a", "b", "c"], vec!["1", "x, \"y\"\nz", "3"]]);
        assert!(parse_csv("a,\"b\n").unwrap_err().contains("never closed"));
    }

    #[test]
    fn labelled_rows_become_examples_and_the_rest_are_counted() {
        let csv = "file,score,mode,summary,error,severity_hand,severity_text,label\n\
                   a.png,0.700000,zero-shot,\"fine, mostly\",,0.6,,reject\n\
                   b.png,0.400000,zero-shot,ok,,,0.2,keep\n\
                   c.png,,,,decode failed,,,keep\n\
                   d.png,0.5,zero-shot,,,,,\n";
        let rows = parse_labelled(csv, "label").unwrap();
        assert_eq!(rows.examples.len(), 2);
        assert_eq!((rows.unscored, rows.unlabelled), (1, 1));
        let a = &rows.examples[0];
        assert_eq!((a.name.as_str(), a.kept, a.features.score), ("a.png", false, 0.7));
        assert_eq!(a.features.severity(RegionCategory::Hand), 0.6);
        assert_eq!(rows.examples[1].features.severity(RegionCategory::Text), 0.2);
        assert_eq!(rows.mode.as_deref(), Some("zero-shot"));
    }

    #[test]
    fn the_raw_score_wins_over_a_calibrated_one() {
        let csv = "file,score,uncalibrated_score,label\na.png,0.9,0.3,keep\n";
        assert_eq!(parse_labelled(csv, "label").unwrap().examples[0].features.score, 0.3);
    }

    #[test]
    fn bad_cells_name_line_and_column() {
        let err = parse_labelled("file,score,label\na.png,0.5,maybe\n", "label").unwrap_err();
        assert!(err.contains("line 2, column label") && err.contains("maybe"), "{err}");
        let err = parse_labelled("file,score,mine\na.png,high,keep\n", "mine").unwrap_err();
        assert!(err.contains("line 2, column score"), "{err}");
        let err = parse_labelled("file,score\na.png,0.5\n", "label").unwrap_err();
        assert!(err.contains("no `label` column") && err.contains("--label-column"), "{err}");
        let err = parse_labelled("file,score,severity_hand,label\na.png,0.5,2,keep\n", "label").unwrap_err();
        assert!(err.contains("severity_hand"), "{err}");
    }
}
