//! The engine: loads an InternVL GGUF pair, owns the model runtime's context on one thread, and runs
//! [`SequenceProgram`]s with continuous batching. It knows nothing about gRPC or chains of thought.
//!
//! The runtime is reached through two traits (`runtime.rs`: [`Vocabulary`], [`Runtime`]); llama.cpp,
//! the one implementation, lives in `llama/` with all of the crate's `unsafe`. The decode loop
//! (`decode_loop/`) is generic over the runtime and knows no llama.cpp call.

mod decode_loop;
mod error;
mod faults;
mod image_cache;
mod liveness;
mod llama;
mod metrics;
mod program;
mod runtime;
mod sampler;
mod speedups;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

pub use error::EngineError;
pub use llama::{cpu_build_features, gguf_file, gpu_devices, runs_on_gpu, supports_gpu_offload, Model};
pub use liveness::Liveness;
#[doc(hidden)]
pub use faults::{injected_fault, injected_reference_text};
pub use metrics::EngineMetrics;
pub use program::{GenerationEnd, Sampling, SequenceEnd, SequenceProgram, Step, TokenVerdict};
pub use runtime::{Runtime, TileBitmap, Token, Vocabulary};
pub use sampler::argmax;
pub use speedups::SpeedUps;
pub use stats::SequenceStats;

use decode_loop::DecodeLoop;

/// The runtime this build runs. A concrete type, not `dyn Runtime`: the decode loop is monomorphised
/// over it, so nothing on the per-token path becomes an indirect call (see `runtime.rs`).
type ActiveRuntime = llama::LlamaRuntime;

/// The image cache's default size (`--image-cache-mb`). An InternVL3-2B image of 3 tiles after the
/// system prompt keeps ~24 MiB of KV cells and 4.5 MiB of tile features, so this holds about 35 such
/// images; an 8B image of 10 tiles ~180 MiB, about 5. (llama-server's prompt cache defaults to 8 GiB.)
pub const DEFAULT_IMAGE_CACHE_MB: usize = 1024;

/// How to load and run the model.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model: PathBuf,
    pub mmproj: PathBuf,
    /// Layers to offload to the GPU (-1 = all).
    pub n_gpu_layers: i32,
    pub threads: i32,
    /// KV cells per sequence slot.
    pub ctx_per_sequence: u32,
    /// Concurrent sequences decoded together.
    pub slots: u32,
    /// Tokens per llama_decode call (prefill chunk size).
    pub n_batch: u32,
    /// Requests waiting for a slot before new ones are refused.
    pub max_queue: usize,
    /// Tiles one batched vision encode takes at most (an image's tiles plus its thumbnail).
    pub vision_batch_tiles: usize,
    /// Flash attention: `None` = chosen from measurement: off when the model runs on the CPU, else
    /// llama.cpp's choice (on where the backend has it). llama.cpp's CPU kernel takes a per-row path
    /// for 2–63 query rows (decode steps of a few sequences, short forced text), ~0.8 ms per row on the
    /// fixture where plain attention costs ~0.07. Plain attention used to lose at 16 in flight only
    /// because every token attended over every sequence's cells in the unified cache; with
    /// per-sequence KV streams it wins at 1, 4 and 16 (fixture, `heie bench`, README "Throughput").
    pub flash_attention: Option<bool>,
    /// Throughput optimisations (all on unless a benchmark measures the naive path).
    pub speedups: SpeedUps,
    /// Bytes kept for images judged again (`image_cache.rs`: their KV cells and tile features); 0 = no cache.
    pub image_cache_bytes: usize,
}

/// Facts about the loaded models that the pipeline and clients need.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub llm_name: String,
    pub mmproj_name: String,
    /// The LLM's hidden width: the size of every captured hidden state and image feature row.
    pub n_embd: usize,
    pub n_vocab: usize,
    /// Side of the square tile the vision tower takes (448 for InternVL3).
    pub tile_size: u32,
    /// Image tokens each tile becomes after pixel shuffle and the projector (256 for InternVL3).
    pub tokens_per_tile: usize,
    /// `[MAP]` and `[SCORE]` token ids when the vocabulary has them as single special tokens.
    pub native_markers: Option<(Token, Token)>,
    /// Where the model runs: "CPU", or e.g. "CUDA0 (NVIDIA H100 80GB HBM3), 29 of 29 layers offloaded".
    pub device: String,
    pub slots: u32,
    pub ctx_per_sequence: u32,
}

struct Job {
    program: Box<dyn SequenceProgram>,
    enqueued_at: Instant,
}

enum Command {
    Run(Job),
    /// Nothing to do but look at the `closing` flag.
    Wake,
    Shutdown,
}

/// A handle to the engine thread. Dropping it stops the thread (in-flight sequences are cancelled).
pub struct Engine {
    model: Arc<Model>,
    info: Arc<ModelInfo>,
    commands: SyncSender<Command>,
    metrics: Arc<EngineMetrics>,
    max_queue: usize,
    /// Set by [`Engine::stop_admitting`]: new work is refused and queued work is turned away.
    closing: Arc<AtomicBool>,
    liveness: Liveness,
    /// Shared with the decode loop; only test builds can change it (`set_step_delay`).
    #[cfg(feature = "fault-injection")]
    step_delay: faults::StepDelay,
    thread: Option<JoinHandle<()>>,
}

fn require_file(path: &Path, what: &str) -> Result<(), EngineError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(EngineError::Load(format!("{what} {} is not a file", path.display()))),
        Err(_) => Err(EngineError::Load(format!("{what} {} does not exist", path.display()))),
    }
}

/// The flash-attention setting to run with: the one asked for, else off on the CPU (it measured
/// slower there at every load, see `EngineConfig::flash_attention`) and llama.cpp's choice on a GPU.
pub fn flash_attention_for(asked: Option<bool>, gpu: bool) -> Option<bool> {
    asked.or(if gpu { None } else { Some(false) })
}

impl Engine {
    /// Loads the model pair, checks they belong together and starts the engine thread.
    pub fn start(config: &EngineConfig) -> Result<Engine, EngineError> {
        require_file(&config.model, "model")?;
        require_file(&config.mmproj, "mmproj")?;
        if config.slots == 0 || config.ctx_per_sequence < 256 || config.n_batch == 0 {
            return Err(EngineError::Load("slots must be ≥ 1, ctx size ≥ 256 and batch ≥ 1".into()));
        }
        let llama::Loaded { model, info, gpu } = llama::load(config)?;
        let tokens_per_tile = info.tokens_per_tile;
        let metrics = Arc::new(EngineMetrics::default());
        let (commands, receiver) = sync_channel::<Command>(config.max_queue.max(1) + 1);
        let (ready_tx, ready_rx) = sync_channel::<Result<(), EngineError>>(1);
        let thread_model = model.clone();
        let thread_metrics = metrics.clone();
        let closing = Arc::new(AtomicBool::new(false));
        let liveness = Liveness::default();
        let (thread_closing, thread_liveness) = (closing.clone(), liveness.clone());
        let step_delay = faults::StepDelay::from_env();
        let thread_step_delay = step_delay.clone();
        let cfg = config.clone();
        let thread = std::thread::Builder::new()
            .name("heie-engine".into())
            .spawn(move || {
                let built = ActiveRuntime::new(thread_model, &cfg, gpu, tokens_per_tile);
                let runtime = match built {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let decode_loop = DecodeLoop::new(
                    runtime,
                    receiver,
                    thread_metrics,
                    cfg.slots as usize,
                    cfg.ctx_per_sequence as i32,
                    cfg.speedups,
                    image_cache::ImageCache::new(cfg.image_cache_bytes),
                    thread_closing,
                    thread_step_delay,
                );
                // A panic, or a return nobody asked for, is the engine's death: the server must
                // not go on answering as if it could still evaluate.
                if let Some(false) = thread_liveness.watch("engine", || decode_loop.run()) {
                    thread_liveness.record_death("the engine thread exited unexpectedly".into());
                }
            })
            .map_err(|e| EngineError::Load(format!("could not start the engine thread: {e}")))?;
        ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        Ok(Engine {
            model,
            info: Arc::new(info),
            commands,
            metrics,
            max_queue: config.max_queue.max(1),
            closing,
            liveness,
            #[cfg(feature = "fault-injection")]
            step_delay,
            thread: Some(thread),
        })
    }

    /// Queues a program; fails at once with `QueueFull` when `max_queue` requests are already waiting.
    pub fn submit(&self, program: Box<dyn SequenceProgram>) -> Result<(), EngineError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        let depth = self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        if depth >= self.max_queue {
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(EngineError::QueueFull(depth));
        }
        match self.commands.try_send(Command::Run(Job { program, enqueued_at: Instant::now() })) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(EngineError::QueueFull(depth))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(EngineError::Stopped)
            }
        }
    }

    /// Shutdown: from now on new work is refused with [`EngineError::ShuttingDown`], and every
    /// sequence still waiting in the queue ends at once with [`SequenceEnd::Refused`] (it never
    /// started). Sequences already in a slot run on.
    pub fn stop_admitting(&self) {
        self.closing.store(true, Ordering::Release);
        // Wake the engine thread if it is idle, so it turns the queue away now. A full queue needs
        // no wake-up (the thread is busy and checks the flag every step).
        let _ = self.commands.try_send(Command::Wake);
    }

    /// Death notices of the engine thread (and of the finalizer, which reports here too).
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Test builds only: from the next decode step on, every step takes `delay` longer (zero: back
    /// to full speed). Tests use it to make work last, or to space steps, by a known time.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn set_step_delay(&self, delay: std::time::Duration) {
        self.step_delay.set(delay);
    }

    /// The text model, for tokenising on the caller's thread.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn info(&self) -> &Arc<ModelInfo> {
        &self.info
    }

    pub fn metrics(&self) -> &Arc<EngineMetrics> {
        &self.metrics
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
