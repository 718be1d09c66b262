//! The llama.cpp engine: loads an InternVL GGUF pair, owns the llama context on one thread, and runs
//! [`SequenceProgram`]s with continuous batching. It knows nothing about gRPC or chains of thought.

mod decode_loop;
mod error;
mod faults;
mod ffi;
pub mod gguf_file;
mod liveness;
mod metrics;
mod program;
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
pub use ffi::{gpu_devices, supports_gpu_offload, Model, Token};
pub use liveness::Liveness;
#[doc(hidden)]
pub use faults::injected_fault;
pub use metrics::EngineMetrics;
pub use program::{GenerationEnd, Sampling, SequenceEnd, SequenceProgram, Step, TileBitmap, TokenVerdict};
pub use sampler::argmax;
pub use speedups::SpeedUps;
pub use stats::SequenceStats;

use decode_loop::DecodeLoop;
use ffi::{Context, ContextParams, Vision};
use gguf_file::GgufFile;

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

/// Reads the vision tower's geometry from the mmproj metadata and checks it is an InternVL projector.
fn read_vision_geometry(mmproj: &Path, meta: &GgufFile) -> Result<(u32, usize, u32, String), EngineError> {
    let projector = meta.string("clip.projector_type").unwrap_or_default();
    if projector != "internvl" {
        return Err(EngineError::Load(format!(
            "{} is not an InternVL mmproj (projector type {:?}, expected \"internvl\")",
            mmproj.display(),
            projector
        )));
    }
    let missing = |k: &str| EngineError::Load(format!("{} lacks metadata {k}", mmproj.display()));
    let tile = meta.u32("clip.vision.image_size").ok_or_else(|| missing("clip.vision.image_size"))?;
    let patch = meta.u32("clip.vision.patch_size").ok_or_else(|| missing("clip.vision.patch_size"))?;
    let shuffle = meta.u32("clip.vision.projector.scale_factor").unwrap_or(2);
    let projection = meta.u32("clip.vision.projection_dim").ok_or_else(|| missing("clip.vision.projection_dim"))?;
    if patch == 0 || shuffle == 0 || tile % (patch * shuffle) != 0 {
        return Err(EngineError::Load(format!(
            "{}: tile {tile} px is not a multiple of patch {patch} × pixel shuffle {shuffle}",
            mmproj.display()
        )));
    }
    let side = (tile / patch / shuffle) as usize;
    let name = meta.string("general.name").unwrap_or_else(|| file_name(mmproj));
    Ok((tile, side * side, projection, name))
}

/// Whether the model's layers go to a GPU: a GPU build, a GPU present, and layers asked for.
pub fn runs_on_gpu(n_gpu_layers: i32) -> bool {
    offloads_to(&gpu_devices(), n_gpu_layers)
}

/// [`runs_on_gpu`] with the GPU list already enumerated.
fn offloads_to(gpus: &[String], n_gpu_layers: i32) -> bool {
    supports_gpu_offload() && !gpus.is_empty() && n_gpu_layers != 0
}

/// The flash-attention setting to run with: the one asked for, else off on the CPU (it measured
/// slower there at every load, see `EngineConfig::flash_attention`) and llama.cpp's choice on a GPU.
pub fn flash_attention_for(asked: Option<bool>, gpu: bool) -> Option<bool> {
    asked.or(if gpu { None } else { Some(false) })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

impl Engine {
    /// Loads the model pair, checks they belong together and starts the engine thread.
    pub fn start(config: &EngineConfig) -> Result<Engine, EngineError> {
        require_file(&config.model, "model")?;
        require_file(&config.mmproj, "mmproj")?;
        if config.slots == 0 || config.ctx_per_sequence < 256 || config.n_batch == 0 {
            return Err(EngineError::Load("slots must be ≥ 1, ctx size ≥ 256 and batch ≥ 1".into()));
        }
        // Both files are checked in Rust first: llama.cpp may abort on a truncated or corrupt one.
        gguf_file::check(&config.model, "model")?;
        let mmproj_meta = gguf_file::check(&config.mmproj, "mmproj")?;
        let (tile_size, tokens_per_tile, projection, mmproj_name) = read_vision_geometry(&config.mmproj, &mmproj_meta)?;
        let model = Arc::new(Model::load(&config.model, config.n_gpu_layers)?);
        if model.n_embd() != projection as usize {
            return Err(EngineError::Load(format!(
                "mmproj {} projects to width {projection} but the model {} has width {}: they are not a pair",
                config.mmproj.display(),
                config.model.display(),
                model.n_embd()
            )));
        }
        let native_markers = model.special_token("[MAP]").zip(model.special_token("[SCORE]"));
        let gpus = gpu_devices();
        let gpu = offloads_to(&gpus, config.n_gpu_layers);
        let info = ModelInfo {
            llm_name: model.meta("general.name").unwrap_or_else(|| file_name(&config.model)),
            mmproj_name,
            n_embd: model.n_embd(),
            n_vocab: model.n_vocab(),
            tile_size,
            tokens_per_tile,
            native_markers,
            device: if gpu {
                let layers = if config.n_gpu_layers < 0 { model.n_layers() as i32 } else { config.n_gpu_layers };
                let layers = layers.min(model.n_layers() as i32);
                format!("{}, {layers} of {} layers offloaded", gpus.join(", "), model.n_layers())
            } else {
                "CPU".to_string()
            },
            slots: config.slots,
            ctx_per_sequence: config.ctx_per_sequence,
        };
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
                // One more sequence, and room for its cells, holds the cached shared prefix. With
                // per-sequence streams every stream gets n_ctx / n_seq_max cells, the prefix's too.
                let per_sequence_kv = cfg.speedups.per_sequence_kv;
                let n_ctx = if per_sequence_kv {
                    cfg.ctx_per_sequence * (cfg.slots + 1)
                } else {
                    cfg.ctx_per_sequence * cfg.slots + decode_loop::PREFIX_CELLS
                };
                let params = ContextParams {
                    n_ctx,
                    n_batch: cfg.n_batch,
                    n_seq_max: cfg.slots + 1,
                    threads: cfg.threads,
                    flash_attention: flash_attention_for(cfg.flash_attention, gpu),
                    per_sequence_kv,
                };
                let vision_batch_tokens = tokens_per_tile * cfg.vision_batch_tiles.max(1);
                let built = Context::new(thread_model.clone(), &params).and_then(|ctx| {
                    Vision::load(&cfg.mmproj, thread_model.clone(), gpu, cfg.threads, vision_batch_tokens).map(|v| (ctx, v))
                });
                let (ctx, vision) = match built {
                    Ok(parts) => parts,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let decode_loop = DecodeLoop::new(
                    thread_model,
                    ctx,
                    vision,
                    receiver,
                    thread_metrics,
                    cfg.slots as usize,
                    cfg.ctx_per_sequence as i32,
                    cfg.n_batch as usize,
                    cfg.speedups,
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
