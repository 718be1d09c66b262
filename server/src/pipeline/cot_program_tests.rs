//! Unit tests of the chain-of-thought program, driven step by step without an engine: teacher
//! forcing and the regions' boxes.

use super::*;
use crate::pipeline::events::event_channel;
use crate::pipeline::options::EvalOptions;
use crate::pipeline::reference::{ReferenceSection, ReferenceTokens};
use crate::pipeline::tiling::TileGrid;

fn tokens() -> PromptTokens {
    PromptTokens {
        before_image: vec![1],
        opening: vec![2],
        regions_heading: vec![3],
        map_sentence: vec![4],
        analysis_heading: vec![5],
        score_sentence: vec![6],
        period: vec![7],
        rating_turn: vec![8],
        map_marker: vec![9, 10],
        score_marker: vec![11, 12],
        level_tokens: [20, 21, 22, 23, 24],
        native: false,
    }
}

fn one_tile() -> Tiling {
    Tiling {
        grid: TileGrid { cols: 1, rows: 1 },
        tile_size: 56,
        original_width: 56,
        original_height: 56,
        has_thumbnail: false,
    }
}

fn setup() -> ProgramSetup {
    ProgramSetup { tokens: Arc::new(tokens()), trained: false, finalizer: Finalizer::start(None) }
}

/// A one-tile request whose chat text after the image is one token.
fn prepared(options: EvalOptions, reference: Option<ReferenceTokens>) -> PreparedRequest {
    PreparedRequest {
        options,
        image_size: (56, 56),
        heatmap_size: (56, 56),
        grid: TileGrid { cols: 1, rows: 1 },
        budget: ContextBudget::default(),
        after_image: vec![0],
        reference,
    }
}

fn start() -> ProgramStart {
    ProgramStart { request_id: 1, started: Instant::now(), preprocess: Default::default() }
}

fn section(text: &str, tokens: Vec<Token>) -> ReferenceSection {
    ReferenceSection { text: text.to_string(), tokens }
}

#[test]
fn a_reference_is_fed_in_place_of_every_generated_section() {
    let reference = ReferenceTokens {
        description: section("A cat.", vec![30]),
        regions: section("<ref>paw</ref><box>[[10,20,300,400]]</box>", vec![31, 32]),
        analysis: section("- Paw: six toes.", vec![33]),
    };
    let (events, mut receiver) = event_channel();
    // Even with the explanation off: the reference is the context the heads train with.
    let options = EvalOptions { explanation: false, ..EvalOptions::default() };
    let mut program = CotProgram::new(&setup(), prepared(options, Some(reference)), one_tile(), Vec::new(), events, start());
    let mut fed = Vec::new();
    let mut captures = Vec::new();
    for _ in 0..30 {
        match program.next_step() {
            Step::Generate { .. } => panic!("a teacher-forced program generated"),
            Step::Feed { tokens, capture, logits } => {
                captures.extend(capture.iter().map(|&i| tokens[i]));
                fed.extend(tokens);
                if logits {
                    program.on_logits(&[0.0; 32]);
                }
            }
            Step::Finish => break,
            _ => {}
        }
    }
    // Opening, description, regions heading, regions, map sentence + marker, analysis heading,
    // analysis, score sentence + marker + period, rating turn.
    assert_eq!(fed, [0, 2, 30, 3, 31, 32, 4, 9, 10, 5, 33, 6, 11, 12, 7, 8]);
    assert_eq!(captures, [10, 12], "the last token of each marker is captured");
    let mut regions = 0;
    let mut shown = String::new();
    while let Some(event) = receiver.try_recv() {
        match event {
            EvalEvent::Region(_) => regions += 1,
            EvalEvent::TextDelta { section, text } if section != Section::Rating => shown.push_str(&text),
            _ => {}
        }
    }
    assert_eq!(regions, 1);
    let expected = crate::pipeline::explanation::render_explanation(
        "A cat.",
        "<ref>paw</ref><box>[[10,20,300,400]]</box>",
        1,
        "- Paw: six toes.",
    );
    assert_eq!(shown, expected, "clients see the reference in the dataset's layout");
}

#[test]
fn boxes_of_the_regions_section_are_reported_once() {
    let tiling = one_tile();
    let (events, mut receiver) = event_channel();
    let options = EvalOptions::default();
    let mut program = CotProgram::new(&setup(), prepared(options, None), tiling, Vec::new(), events, start());
    // Drive the plan up to the [MAP] markers, writing one grounded box in the regions section.
    let mut saw_markers = false;
    for _ in 0..20 {
        match program.next_step() {
            Step::Generate { .. } => {
                let regions = program.section == Some(Section::Regions);
                if regions {
                    program.on_token(0, b"<ref>hand</ref><box>[[10,20,300,400]]</box>");
                }
                program.on_generation_end(GenerationEnd::Length);
            }
            Step::Feed { capture, .. } if !capture.is_empty() => {
                saw_markers = true;
                break;
            }
            _ => {}
        }
    }
    assert!(saw_markers);
    let mut regions = 0;
    while let Some(event) = receiver.try_recv() {
        if matches!(event, EvalEvent::Region(_)) {
            regions += 1;
        }
    }
    assert_eq!(regions, 1);
}
