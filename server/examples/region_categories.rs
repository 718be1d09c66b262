//! Runs the region-category rule (`pipeline/region_category.rs`) over the regions of real HEIE
//! explanations and prints what it makes of them, for the README's table and for reading by hand.
//!
//! ```text
//! cargo run --example region_categories -- ../shared/data/expl-aigi-eval/*.jsonl [--sample 50]
//! ```
//!
//! A region of an Expl-AIGI-Eval explanation is one line of its "Analysis of Issues" section:
//! `Label: what is wrong.` gives the label and its sentence; a line without a short label before a
//! colon (`- Anatomical inaccuracy.`) is a region with no label, categorised by its sentence alone.

use std::collections::BTreeMap;

use heie_server::pipeline::region_category::{categorize, RegionCategory};

/// A label is at most this many words; a longer text before a colon is a sentence, not a label.
const MAX_LABEL_WORDS: usize = 6;

struct ExampleRegion {
    label: String,
    sentence: String,
}

fn main() -> anyhow::Result<()> {
    let mut files = Vec::new();
    let mut sample = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--sample" {
            sample = args.next().ok_or_else(|| anyhow::anyhow!("--sample needs a number"))?.parse()?;
        } else {
            files.push(arg);
        }
    }
    anyhow::ensure!(!files.is_empty(), "usage: region_categories FILE.jsonl... [--sample N]");

    let mut regions = Vec::new();
    let mut explanations = 0usize;
    for file in &files {
        for line in std::fs::read_to_string(file)?.lines().filter(|l| !l.trim().is_empty()) {
            let row: serde_json::Value = serde_json::from_str(line)?;
            let answer = row["conversations"]
                .as_array()
                .and_then(|turns| turns.iter().find(|t| t["from"] == "gpt"))
                .and_then(|t| t["value"].as_str())
                .ok_or_else(|| anyhow::anyhow!("{file}: a row without the model's answer"))?;
            explanations += 1;
            regions.extend(analysis_regions(answer));
        }
    }

    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut unlabelled = 0usize;
    for region in &regions {
        let category = categorize(&region.label, std::slice::from_ref(&region.sentence));
        *counts.entry(category.name()).or_default() += 1;
        unlabelled += region.label.is_empty() as usize;
    }
    println!("{explanations} explanations, {} regions ({unlabelled} without a label)", regions.len());
    println!("| category | regions | share |\n|---|---:|---:|");
    for category in RegionCategory::ALL {
        let n = counts.get(category.name()).copied().unwrap_or(0);
        println!("| {} | {n} | {:.1} % |", category.name(), 100.0 * n as f64 / regions.len().max(1) as f64);
    }

    // An evenly spaced sample (every k-th region), so the same command prints the same sample.
    if sample > 0 {
        let step = (regions.len() / sample).max(1);
        println!("\nsample of {sample}, every {step}th region:");
        for (n, region) in regions.iter().step_by(step).take(sample).enumerate() {
            let category = categorize(&region.label, std::slice::from_ref(&region.sentence));
            println!("{:>2}. {:<10} {:?}: {:?}", n + 1, category.name(), region.label, region.sentence);
        }
    }
    Ok(())
}

/// The regions of one explanation: the lines of its analysis section.
fn analysis_regions(answer: &str) -> Vec<ExampleRegion> {
    let Some(start) = answer.find("### Analysis of Issues") else { return Vec::new() };
    let section = &answer[start..];
    let section = section.split_once('\n').map_or("", |(_, rest)| rest);
    let end = section.find("Based on the overall analysis").unwrap_or(section.len());
    section[..end]
        .lines()
        .map(|line| line.trim().trim_start_matches(|c: char| "-*•#0123456789. ".contains(c)).replace("**", ""))
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once(':') {
            // "Vintage Car:" alone is a label whose description follows on the next lines.
            Some((label, rest)) if label.split_whitespace().count() <= MAX_LABEL_WORDS => {
                ExampleRegion { label: label.trim().to_string(), sentence: rest.trim().to_string() }
            }
            _ => ExampleRegion { label: String::new(), sentence: line },
        })
        .collect()
}
