//! Loading an InternVL GGUF pair: both files checked in Rust first (llama.cpp may abort on a truncated
//! or corrupt one), the vision tower's geometry read from the mmproj's metadata, the text model loaded
//! and matched against the projector's width, and the facts the pipeline needs gathered in a
//! [`ModelInfo`].

use std::path::Path;
use std::sync::Arc;

use super::devices::{gpu_devices, offloads_to};
use super::gguf_file::{self, GgufFile};
use super::model::Model;
use crate::engine::{EngineConfig, EngineError, ModelInfo};

/// A loaded text model and what is known about the pair.
pub struct Loaded {
    pub model: Arc<Model>,
    pub info: ModelInfo,
    /// Whether the model's layers run on a GPU (the vision tower follows).
    pub gpu: bool,
}

/// Checks both files, loads the text model and describes the pair. The vision tower itself is loaded
/// on the engine thread ([`super::LlamaRuntime::new`]), which owns it.
pub fn load(config: &EngineConfig) -> Result<Loaded, EngineError> {
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
    Ok(Loaded { model, info, gpu })
}

/// Reads the vision tower's geometry from the mmproj metadata and checks it is an InternVL projector:
/// `(tile side, tokens per tile, projection width, name)`.
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

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
