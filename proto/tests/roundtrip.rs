//! The generated types encode and decode, and the embedded descriptor set describes the service that
//! reflection will advertise.

use heie_proto::v1::{
    batch_event, evaluate_event, BatchEvent, Done, EvaluateEvent, FinishReason, HeadsMode, Heatmap,
    HeatmapEncoding, HeatmapSource, LevelProbability, RankedImage, Ranking, Score, Started, Tiles,
    Timings, TokenCounts,
};
use prost::Message;

fn sample_score() -> EvaluateEvent {
    EvaluateEvent {
        event: Some(evaluate_event::Event::Score(Score {
            score: 0.625,
            mode: HeadsMode::ZeroShot as i32,
            levels: vec![
                LevelProbability {
                    level: "good".into(),
                    probability: 0.75,
                },
                LevelProbability {
                    level: "poor".into(),
                    probability: 0.25,
                },
            ],
            s_token: None,
            s_map: Some(0.5),
            band: "good".into(),
            uncalibrated_score: None,
        })),
    }
}

#[test]
fn evaluate_events_round_trip() {
    let events = vec![
        EvaluateEvent {
            event: Some(evaluate_event::Event::Started(Started {
                request_id: "req-1".into(),
                tiles: Some(Tiles {
                    cols: 2,
                    rows: 1,
                    has_thumbnail: true,
                    tile_size: 448,
                }),
                mode: HeadsMode::ZeroShot as i32,
                prompt_mode: heie_proto::v1::PromptMode::Guided as i32,
                image_width: 896,
                image_height: 448,
            })),
        },
        EvaluateEvent {
            event: Some(evaluate_event::Event::Heatmap(Heatmap {
                width: 2,
                height: 1,
                encoding: HeatmapEncoding::RawF32Le as i32,
                data: [0.0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                source: HeatmapSource::ZeroShot as i32,
            })),
        },
        sample_score(),
        EvaluateEvent {
            event: Some(evaluate_event::Event::Done(Done {
                timings: Some(Timings {
                    total_ms: 12.5,
                    decode_tokens_per_s: 40.0,
                    ..Default::default()
                }),
                tokens: Some(TokenCounts {
                    prompt_tokens: 30,
                    image_tokens: 768,
                    generated_tokens: 120,
                }),
                finish_reason: FinishReason::Completed as i32,
                device: "CPU".into(),
                message: String::new(),
                summary: "score 0.254 (zero-shot): The left hand has six fingers.".into(),
            })),
        },
    ];
    for event in events {
        let bytes = event.encode_to_vec();
        let decoded = EvaluateEvent::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded, event);
    }
}

#[test]
fn optional_fields_keep_presence() {
    let decoded = EvaluateEvent::decode(sample_score().encode_to_vec().as_slice()).unwrap();
    let Some(evaluate_event::Event::Score(score)) = decoded.event else {
        panic!("score expected")
    };
    assert_eq!(score.s_token, None);
    assert_eq!(score.s_map, Some(0.5));
    assert_eq!(score.mode(), HeadsMode::ZeroShot);
}

#[test]
fn batch_events_carry_index_and_ranking() {
    let events = [
        BatchEvent {
            index: 3,
            payload: Some(batch_event::Payload::Event(sample_score())),
        },
        BatchEvent {
            index: 0,
            payload: Some(batch_event::Payload::Ranking(Ranking {
                entries: vec![
                    RankedImage {
                        index: 3,
                        score: 0.625,
                    },
                    RankedImage {
                        index: 1,
                        score: 0.25,
                    },
                ],
            })),
        },
    ];
    for event in events {
        assert_eq!(
            BatchEvent::decode(event.encode_to_vec().as_slice()).unwrap(),
            event
        );
    }
}

#[test]
fn descriptor_set_describes_the_evaluator_service() {
    let set =
        prost_types::FileDescriptorSet::decode(heie_proto::FILE_DESCRIPTOR_SET).expect("decodes");
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "heie.v1")
        .expect("a file of package heie.v1");
    let service = file
        .service
        .iter()
        .find(|s| format!("{}.{}", file.package(), s.name()) == heie_proto::EVALUATOR_SERVICE_NAME)
        .expect("service heie.v1.Evaluator");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for rpc in ["Evaluate", "EvaluateBatch", "Rerank", "GetInfo"] {
        assert!(methods.contains(&rpc), "missing rpc {rpc}: {methods:?}");
    }
    // Comments travel with the set, so reflection clients see the documentation too.
    assert!(file.source_code_info.is_some(), "source info kept");
}
