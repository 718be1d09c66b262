//! One image into a fresh sequence's context, HEIE's engine against llama.cpp's own path, like for
//! like (issue 16, item 6): the same fixture model pair, one tile-sized picture (mtmd then makes one
//! tile and no thumbnail, so both sides put the same image tokens into the context), one thread,
//! flash attention off (what HEIE runs with on a CPU) and 512-token batches on both sides.
//!
//! - `llama.cpp mtmd_helper_eval_chunk_single`: what llama-server does per image — `mtmd_tokenize`
//!   (the image preprocessed into a chunk), then the helper on the image chunk (vision encode, then
//!   the embeddings decoded in `n_batch` chunks), as `mtmd_helper_eval_chunks` does for each image.
//! - `heie engine Images step`: a sequence whose only step is `Step::Images` with the same pixels,
//!   submitted to a running engine and waited for: the engine thread's hand-off, the encode, the
//!   per-tile feature copy the heads need, the embedding decodes and the sequence's clean-up.
//!
//! `cargo bench -p heie-server --bench image_path`. On the fixture a tile is 4 image tokens, so fixed
//! costs dominate and criterion measures both sides. `HEIE_BENCH_MODEL` and `HEIE_BENCH_MMPROJ` run the
//! comparison on another pair, e.g. random-weight GGUFs with InternVL3-2B's exact shapes
//! (`../shared/anchors/gen_shapes.py`: a 448-px tile, 256 image tokens, InternViT-300M and a 1.5B LLM),
//! where one image takes tens of seconds: criterion's sequential samples would put any drift in the
//! machine's load on one side, so that mode runs `HEIE_BENCH_PAIRS` (default 6) alternating pairs
//! instead — llama.cpp then HEIE, HEIE then llama.cpp, … — and prints each pair's vision encode and
//! image prefill on both sides and the ratios' median and range.

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use heie_server::engine::{
    Engine, EngineConfig, SequenceEnd, SequenceProgram, SequenceStats, SpeedUps, Step, TileBitmap, Token,
    TokenVerdict,
};
use llama_cpp_sys_2 as sys;

const THREADS: i32 = 1;
const N_BATCH: u32 = 512;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models").join(name)
}

/// The pair `HEIE_BENCH_MODEL` + `HEIE_BENCH_MMPROJ` name, when both are set.
fn chosen_pair() -> Option<(PathBuf, PathBuf)> {
    Some((std::env::var_os("HEIE_BENCH_MODEL")?.into(), std::env::var_os("HEIE_BENCH_MMPROJ")?.into()))
}

/// The model pair measured: the chosen one, else the fixture.
fn model_pair() -> (PathBuf, PathBuf) {
    chosen_pair().unwrap_or_else(|| (fixture("tiny-llm.gguf"), fixture("tiny-mmproj.gguf")))
}

fn tile_pixels(side: u32) -> Vec<u8> {
    (0..side * side).flat_map(|i| [(i % 251) as u8, (i / side % 256) as u8, (i * 7 % 256) as u8]).collect()
}

/// A log callback that drops every line.
unsafe extern "C" fn quiet(_: sys::ggml_log_level, _: *const std::os::raw::c_char, _: *mut std::ffi::c_void) {}

/// llama.cpp alone: model, context and mtmd context made once, the memory cleared before each image.
struct Raw {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    mtmd: *mut sys::mtmd_context,
}

impl Raw {
    fn load() -> Raw {
        let (model, mmproj) = model_pair();
        let model_path = CString::new(model.to_str().unwrap()).unwrap();
        let mmproj_path = CString::new(mmproj.to_str().unwrap()).unwrap();
        // SAFETY: plain llama.cpp set-up calls with valid, NUL-terminated paths; every result is checked.
        unsafe {
            sys::llama_backend_init();
            let mut mp = sys::llama_model_default_params();
            mp.n_gpu_layers = 0;
            let model = sys::llama_model_load_from_file(model_path.as_ptr(), mp);
            assert!(!model.is_null(), "fixture model loads");
            let mut cp = sys::llama_context_default_params();
            cp.n_ctx = 4096;
            cp.n_batch = N_BATCH;
            cp.n_ubatch = N_BATCH;
            cp.n_seq_max = 1;
            cp.n_threads = THREADS;
            cp.n_threads_batch = THREADS;
            cp.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
            cp.no_perf = true;
            let ctx = sys::llama_init_from_model(model, cp);
            assert!(!ctx.is_null(), "context");
            let mut vp = sys::mtmd_context_params_default();
            vp.use_gpu = false;
            vp.n_threads = THREADS;
            vp.print_timings = false;
            vp.warmup = false;
            let mtmd = sys::mtmd_init_from_file(mmproj_path.as_ptr(), model, vp);
            assert!(!mtmd.is_null(), "mtmd context");
            // The helper logs every slice it encodes; printing that is not the work being measured.
            sys::mtmd_helper_log_set(Some(quiet), std::ptr::null_mut());
            Raw { model, ctx, mtmd }
        }
    }

    /// Clears sequence 0 and tokenises one image (mtmd also wraps it in `<img>`/`</img>` text, which
    /// HEIE feeds as part of its prompt: not image work, so not evaluated here), hands its image chunk
    /// to `eval` and frees what it made.
    fn with_image_chunk<T>(&self, rgb: &[u8], side: u32, eval: impl FnOnce(*const sys::mtmd_input_chunk) -> T) -> T {
        // SAFETY: valid handles from `load`; rgb holds side×side×3 bytes; the chunk lives until the
        // chunks are freed, after `eval` returns.
        unsafe {
            sys::llama_memory_clear(sys::llama_get_memory(self.ctx), true);
            let bitmap = sys::mtmd_bitmap_init(side, side, rgb.as_ptr());
            let chunks = sys::mtmd_input_chunks_init();
            let marker = CStr::from_ptr(sys::mtmd_default_marker());
            let text = sys::mtmd_input_text {
                text: marker.as_ptr(),
                text_len: marker.to_bytes().len(),
                add_special: false,
                parse_special: true,
            };
            let bitmaps = [bitmap as *const sys::mtmd_bitmap];
            assert_eq!(sys::mtmd_tokenize(self.mtmd, chunks, &text, bitmaps.as_ptr() as *mut _, 1), 0);
            let image = (0..sys::mtmd_input_chunks_size(chunks))
                .map(|i| sys::mtmd_input_chunks_get(chunks, i))
                .find(|&c| sys::mtmd_input_chunk_get_type(c) == sys::MTMD_INPUT_CHUNK_TYPE_IMAGE)
                .expect("an image chunk");
            let out = eval(image);
            sys::mtmd_input_chunks_free(chunks);
            sys::mtmd_bitmap_free(bitmap);
            out
        }
    }

    /// One image through `mtmd_helper_eval_chunk_single` on an empty sequence 0, as llama-server does;
    /// returns the positions the image took.
    fn eval_image(&self, rgb: &[u8], side: u32) -> i32 {
        self.with_image_chunk(rgb, side, |image| {
            let mut n_past = 0;
            // SAFETY: a live image chunk of this mtmd context; the context's sequence 0 is empty.
            let rc = unsafe { sys::mtmd_helper_eval_chunk_single(self.mtmd, self.ctx, image, 0, 0, N_BATCH as i32, false, &mut n_past) };
            assert_eq!(rc, 0);
            n_past
        })
    }

    /// The same work as [`Raw::eval_image`], timed in its two stages: the vision encode
    /// (`mtmd_encode_chunk`) and the embeddings' decode (`mtmd_helper_decode_image_chunk`, which is
    /// what `mtmd_helper_eval_chunk_single` calls after encoding).
    fn eval_image_stages(&self, rgb: &[u8], side: u32) -> Stages {
        let started = Instant::now();
        let (encode, prefill) = self.with_image_chunk(rgb, side, |image| {
            // SAFETY: a live image chunk; the embeddings pointer is mtmd's output buffer, valid until
            // the next encode, and read by the decode before anything else encodes.
            unsafe {
                let encode_started = Instant::now();
                assert_eq!(sys::mtmd_encode_chunk(self.mtmd, image), 0);
                let encode = encode_started.elapsed();
                let embd = sys::mtmd_get_output_embd(self.mtmd);
                let decode_started = Instant::now();
                let mut n_past = 0;
                let rc = sys::mtmd_helper_decode_image_chunk(self.mtmd, self.ctx, image, embd, 0, 0, N_BATCH as i32, &mut n_past, None, std::ptr::null_mut());
                assert_eq!(rc, 0);
                (encode, decode_started.elapsed())
            }
        });
        Stages { encode, prefill, total: started.elapsed() }
    }
}

/// One image's time on one side: the vision encode, the embeddings' decode and the whole call.
#[derive(Clone, Copy)]
struct Stages {
    encode: Duration,
    prefill: Duration,
    total: Duration,
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: handles from `load`, freed once, dependents first.
        unsafe {
            sys::mtmd_free(self.mtmd);
            sys::llama_free(self.ctx);
            sys::llama_model_free(self.model);
        }
    }
}

/// A sequence that is one image and nothing else.
struct ImageOnly {
    tile: Option<TileBitmap>,
    done: Sender<(SequenceEnd, SequenceStats)>,
}

impl SequenceProgram for ImageOnly {
    fn next_step(&mut self) -> Step {
        match self.tile.take() {
            Some(tile) => Step::Images(vec![tile]),
            None => Step::Finish,
        }
    }
    fn on_token(&mut self, _: Token, _: &[u8]) -> TokenVerdict {
        TokenVerdict::Continue
    }
    fn finish(&mut self, end: SequenceEnd, stats: &SequenceStats) {
        let _ = self.done.send((end, stats.clone()));
    }
}

/// HEIE's engine on the model pair, set up like llama.cpp's side: one slot, one thread, 512-token
/// batches, flash attention off, and no image cache (the same tile is fed every time: a cache would
/// measure itself, not the image path).
struct HeieSide {
    engine: Engine,
    side: u32,
}

impl HeieSide {
    fn start() -> HeieSide {
        let (model, mmproj) = model_pair();
        let engine = Engine::start(&EngineConfig {
            model,
            mmproj,
            n_gpu_layers: 0,
            threads: THREADS,
            ctx_per_sequence: 4096,
            slots: 1,
            n_batch: N_BATCH,
            max_queue: 4,
            vision_batch_tiles: 7,
            flash_attention: Some(false),
            speedups: SpeedUps::ALL,
            image_cache_bytes: 0,
        })
        .expect("engine on the model pair");
        let side = engine.info().tile_size;
        HeieSide { engine, side }
    }

    /// Submits a sequence that is this one tile, waits for it to finish; the engine's own stage times
    /// and the wall time from submission to the finished sequence.
    fn eval_image(&self, pixels: &[u8]) -> (Stages, u32) {
        let started = Instant::now();
        let (tx, rx) = channel();
        let tile = TileBitmap { rgb: pixels.to_vec(), width: self.side, height: self.side };
        self.engine.submit(Box::new(ImageOnly { tile: Some(tile), done: tx })).expect("submit");
        let (end, stats) = rx.recv().expect("finished");
        assert_eq!(end, SequenceEnd::Completed);
        (Stages { encode: stats.image_encode, prefill: stats.image_prefill, total: started.elapsed() }, stats.image_tokens)
    }
}

/// Both sides on the model pair and the tile they are fed, after one image through each (first touch of
/// weights and buffers) that checks they put the same number of image tokens into the context;
/// returns that number too.
fn both_sides() -> (HeieSide, Raw, Vec<u8>, u32) {
    let heie = HeieSide::start();
    let pixels = tile_pixels(heie.side);
    let raw = Raw::load();
    let (_, tokens) = heie.eval_image(&pixels);
    assert_eq!(raw.eval_image(&pixels, heie.side), tokens as i32, "same image tokens on both sides");
    (heie, raw, pixels, tokens)
}

fn image_path(c: &mut Criterion) {
    let (heie, raw, pixels, _) = both_sides();
    let side = heie.side;
    let mut group = c.benchmark_group(format!("one {side}x{side} image into the context"));
    group.bench_function("llama.cpp mtmd_helper_eval_chunk_single", |b| b.iter(|| raw.eval_image(&pixels, side)));
    group.bench_function("heie engine Images step", |b| b.iter(|| heie.eval_image(&pixels)));
    group.finish();
}

/// Median and range of `values` (not empty).
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
    (median, values[0], values[n - 1])
}

/// The real-shape mode: alternating pairs, each stage's ratio HEIE ÷ llama.cpp per pair.
fn alternating_pairs() {
    let pairs: usize = std::env::var("HEIE_BENCH_PAIRS").ok().and_then(|v| v.parse().ok()).unwrap_or(6).max(1);
    let (heie, raw, pixels, heie_tokens) = both_sides();
    let side = heie.side;
    println!("one {side}x{side} image ({heie_tokens} image tokens) into the context, {pairs} alternating pairs");
    println!("pair  first      llama.cpp encode/prefill/total s   heie encode/prefill/total s   heie ÷ llama.cpp total");
    let secs = |d: Duration| d.as_secs_f64();
    let mut ratios: [Vec<f64>; 3] = Default::default();
    for pair in 0..pairs {
        let heie_first = pair % 2 == 1;
        let (h, r) = if heie_first {
            let h = heie.eval_image(&pixels).0;
            (h, raw.eval_image_stages(&pixels, side))
        } else {
            let r = raw.eval_image_stages(&pixels, side);
            (heie.eval_image(&pixels).0, r)
        };
        let total = secs(h.total) / secs(r.total);
        println!(
            "{pair:>4}  {:<9}  {:>7.2} {:>7.2} {:>7.2}            {:>7.2} {:>7.2} {:>7.2}         {total:.3}",
            if heie_first { "heie" } else { "llama.cpp" },
            secs(r.encode),
            secs(r.prefill),
            secs(r.total),
            secs(h.encode),
            secs(h.prefill),
            secs(h.total),
        );
        ratios[0].push(secs(h.encode) / secs(r.encode));
        ratios[1].push(secs(h.prefill) / secs(r.prefill));
        ratios[2].push(total);
    }
    for (name, values) in ["vision encode", "image prefill", "whole image"].iter().zip(ratios) {
        let (median, low, high) = spread(values);
        println!("{name:<14} heie ÷ llama.cpp: median {median:.3} (range {low:.3}–{high:.3})");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = image_path
}

fn main() {
    if chosen_pair().is_some() {
        alternating_pairs();
    } else {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
