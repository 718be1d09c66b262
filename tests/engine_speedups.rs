//! The engine's throughput optimisations (issue 7) change how many llama.cpp calls a sequence takes,
//! never what it computes: the same image through the optimised and the naive engine gives the same
//! features, hidden states, explanation and score, on the real llama.cpp with the fixture models.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use heie_server::engine::{Engine, SpeedUps};
use heie_server::pipeline::{EvalOptions, EvalResult, Evaluator};

use common::{config, test_image};

fn evaluator(speedups: SpeedUps) -> Evaluator {
    let mut cfg = config("tiny-llm.gguf", "tiny-mmproj.gguf", 2);
    cfg.speedups = speedups;
    Evaluator::new(Arc::new(Engine::start(&cfg).expect("fixture engine starts"))).unwrap()
}

fn run(evaluator: &Evaluator) -> EvalResult {
    let options = EvalOptions { max_tokens_per_section: 10, emit_captures: true, ..Default::default() };
    let (_, events) = evaluator.evaluate(&test_image(1024, 768), options).expect("evaluation starts");
    let result = EvalResult::collect(events, |_| {});
    assert_eq!(result.error, None);
    result
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Batched and one-at-a-time matrix products round differently, so states are compared with a
/// tolerance far below the differences between distinct tokens or tiles.
fn assert_same_computation(fast: &EvalResult, naive: &EvalResult, what: &str) {
    let (f, n) = (fast.captures.as_ref().unwrap(), naive.captures.as_ref().unwrap());
    assert_eq!(f.features.len(), n.features.len(), "{what}: tiles");
    for (a, b) in f.features.iter().zip(&n.features) {
        assert!(max_abs_diff(a, b) < 1e-3, "{what}: tile features differ by {}", max_abs_diff(a, b));
    }
    assert_eq!(f.map_hidden.len(), n.map_hidden.len(), "{what}: [MAP] states");
    for (a, b) in f.map_hidden.iter().zip(&n.map_hidden) {
        assert!(max_abs_diff(a, b) < 1e-2, "{what}: [MAP] states differ by {}", max_abs_diff(a, b));
    }
    let (fs, ns) = (f.score_hidden.as_ref().unwrap(), n.score_hidden.as_ref().unwrap());
    assert!(max_abs_diff(fs, ns) < 1e-2, "{what}: [SCORE] state differs by {}", max_abs_diff(fs, ns));
    assert_eq!(fast.explanation.chain_of_thought(), naive.explanation.chain_of_thought(), "{what}: explanation");
    let (a, b) = (fast.score().unwrap(), naive.score().unwrap());
    assert!((a - b).abs() < 1e-3, "{what}: score {a} vs {b}");
    assert_eq!(fast.tokens.prompt, naive.tokens.prompt, "{what}: prompt tokens");
    assert_eq!(fast.tokens.image, naive.tokens.image, "{what}: image tokens");
}

#[test]
fn every_speed_up_leaves_the_result_unchanged() {
    let naive = evaluator(SpeedUps::NONE);
    let reference = run(&naive);
    let fast = evaluator(SpeedUps::ALL);
    // The second request through the optimised engine starts from the cached prefix.
    let first = run(&fast);
    let second = run(&fast);
    assert_same_computation(&first, &reference, "all speed-ups, prefix computed");
    assert_same_computation(&second, &reference, "all speed-ups, prefix reused");
    assert_eq!(fast.engine().metrics().prefix_cache_hits.load(Ordering::Relaxed), 1);
    assert_eq!(naive.engine().metrics().prefix_cache_hits.load(Ordering::Relaxed), 0);
    drop((fast, naive));
    // Each optimisation alone switched off (so each is checked on its own).
    for name in SpeedUps::NAMES {
        let result = run(&evaluator(SpeedUps::ALL.without(name).unwrap()));
        assert_same_computation(&result, &reference, name);
    }
}

#[test]
fn concurrent_sequences_share_the_cached_prefix_and_finish_correctly() {
    let fast = evaluator(SpeedUps::ALL);
    let alone = run(&fast);
    // Two at once, both from the cache: their results equal the lone run's.
    let options = EvalOptions { max_tokens_per_section: 10, emit_captures: true, ..Default::default() };
    let streams: Vec<_> = (0..2)
        .map(|_| fast.evaluate(&test_image(1024, 768), options.clone()).expect("starts").1)
        .collect();
    for events in streams {
        let result = EvalResult::collect(events, |_| {});
        assert_eq!(result.error, None);
        assert_same_computation(&result, &alone, "concurrent");
    }
    assert_eq!(fast.engine().metrics().prefix_cache_hits.load(Ordering::Relaxed), 2);
}

#[test]
fn an_image_judged_again_takes_its_cells_and_features_from_the_cache_and_gives_the_same_result() {
    let mut uncached_cfg = config("tiny-llm.gguf", "tiny-mmproj.gguf", 2);
    uncached_cfg.image_cache_bytes = 0;
    let uncached = Evaluator::new(Arc::new(Engine::start(&uncached_cfg).expect("fixture engine starts"))).unwrap();
    let reference = run(&uncached);
    let again_uncached = run(&uncached);
    assert!(!reference.timings.image_cached && !again_uncached.timings.image_cached);
    assert_eq!(uncached.engine().metrics().image_cache_hits.load(Ordering::Relaxed), 0);

    let cached = evaluator(SpeedUps::ALL);
    let first = run(&cached);
    let second = run(&cached);
    let tiles = first.captures.as_ref().unwrap().features.len() as u64;
    assert!(tiles > 1, "the test image is cut into several tiles");
    assert!(!first.timings.image_cached, "nothing was cached before the first evaluation");
    assert!(second.timings.image_cached, "every tile of the repeated image came from the cache");
    assert_eq!(second.timings.image_encode_ms, 0.0, "no tile went through the vision tower again");
    assert_eq!(second.timings.image_prefill_ms, 0.0, "the image's cells were restored, not decoded again");
    assert!(first.timings.image_prefill_ms > 0.0);
    let metrics = cached.engine().metrics();
    assert_eq!(metrics.image_cache_misses.load(Ordering::Relaxed), tiles);
    assert_eq!(metrics.image_cache_hits.load(Ordering::Relaxed), tiles);
    assert_eq!(metrics.image_cache_image_misses.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.image_cache_image_hits.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.image_cache_prompt_hits.load(Ordering::Relaxed), 1, "the first token came from saved logits");
    assert!(metrics.image_cache_bytes.load(Ordering::Relaxed) > 0);

    // The same computation as without any cache, and bit for bit the first evaluation's.
    assert_same_computation(&second, &reference, "tile features from the cache");
    let (a, b) = (first.captures.as_ref().unwrap(), second.captures.as_ref().unwrap());
    assert_eq!(a.features, b.features);
    assert_eq!(first.explanation.chain_of_thought(), second.explanation.chain_of_thought());
    assert_eq!(first.score(), second.score());
    assert_eq!(first.heatmap().unwrap().map, second.heatmap().unwrap().map);
    assert_eq!(first.tokens.image, second.tokens.image, "the restored image counts its tokens");

    // The same image with the client's generation prompt: the image comes from the cache, the prompt
    // after it is computed, and the result is what an engine without a cache gives.
    let prompted = |evaluator: &Evaluator| {
        let options = EvalOptions {
            max_tokens_per_section: 10,
            emit_captures: true,
            generation_prompt: Some("a woman holding a sign".into()),
            ..Default::default()
        };
        let (_, events) = evaluator.evaluate(&test_image(1024, 768), options).expect("evaluation starts");
        EvalResult::collect(events, |_| {})
    };
    let with_prompt = prompted(&cached);
    assert_eq!(with_prompt.error, None);
    assert!(with_prompt.timings.image_cached);
    assert_eq!(metrics.image_cache_image_hits.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.image_cache_prompt_hits.load(Ordering::Relaxed), 1, "another prompt: computed after the image");
    assert_same_computation(&with_prompt, &prompted(&uncached), "cached image, another prompt");
    assert!(with_prompt.tokens.prompt > second.tokens.prompt);

    // Two identical images at once: whichever finds nothing saved yet computes, the other may take
    // what the first saved; both give the same result, and so does the image judged once more.
    let options = EvalOptions { max_tokens_per_section: 10, emit_captures: true, ..Default::default() };
    let fresh = evaluator(SpeedUps::ALL);
    let streams: Vec<_> = (0..2).map(|_| fresh.evaluate(&test_image(1024, 768), options.clone()).expect("starts").1).collect();
    for events in streams {
        let result = EvalResult::collect(events, |_| {});
        assert_eq!(result.error, None);
        assert_same_computation(&result, &reference, "the same image twice at once");
    }
    let prompt_hits = || fresh.engine().metrics().image_cache_prompt_hits.load(Ordering::Relaxed);
    let before = prompt_hits();
    let after = run(&fresh);
    assert!(after.timings.image_cached);
    assert_eq!(prompt_hits(), before + 1);
    assert_same_computation(&after, &reference, "restored after two concurrent first evaluations");

    // Other pixels are another image: encoded, not taken from the cache.
    let options = EvalOptions { max_tokens_per_section: 10, ..Default::default() };
    let (_, events) = cached.evaluate(&test_image(800, 600), options).expect("evaluation starts");
    let other = EvalResult::collect(events, |_| {});
    assert!(!other.timings.image_cached);
}
