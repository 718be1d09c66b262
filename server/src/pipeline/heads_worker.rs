//! The trained heads' work that can start before an evaluation ends. Each tile's image side is projected
//! as soon as the vision encoder delivers it, and the heatmap (mapper, rendering, map scorer) is computed
//! as soon as the last `[MAP]` state is captured, while the model still writes its analysis. What is
//! left once the `[SCORE]` state exists (token scorer and calibration, `Heads::score_maps`) takes well
//! under a millisecond, so the heads add almost nothing after the text is written.
//!
//! One thread runs the jobs first in, first out. A heatmap job is submitted by the engine thread after
//! its tiles' projections, so it finds them done: nothing here ever waits for other work here (rayon
//! workers waiting on each other could deadlock a one-thread pool). Each job parallelises inside
//! through rayon. A panicking job becomes its request's error; the thread goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Sender, SyncSender};
use std::sync::Arc;

use heie_heads::{HeadsMaps, MapsInput, ProjectedView, ViewInput};

use super::pending::Pending;
use super::tiling::Tiling;
use super::trained::TrainedHeads;

/// What the heatmap of one image needs: its tiles' projections (tiles in grid order, then the
/// thumbnail), their `[MAP]` states in the same order, the grid and the output size.
pub struct MapsRequest {
    pub projected: Vec<Pending<ProjectedView>>,
    pub map_hidden: Vec<Vec<f32>>,
    pub tiling: Tiling,
    pub out_size: (u32, u32),
}

enum Job {
    Project { features: Vec<f32>, done: SyncSender<Result<ProjectedView, String>> },
    Maps { request: MapsRequest, done: SyncSender<Result<HeadsMaps, String>> },
}

/// A handle to the heads thread; it ends when every handle is dropped.
#[derive(Clone)]
pub struct HeadsWorker {
    jobs: Sender<Job>,
}

impl HeadsWorker {
    pub fn start(heads: Arc<TrainedHeads>) -> HeadsWorker {
        let (jobs, receiver) = channel::<Job>();
        std::thread::Builder::new()
            .name("heie-heads".into())
            .spawn(move || {
                for job in receiver {
                    run(&heads, job);
                }
            })
            .expect("spawning the heads thread");
        HeadsWorker { jobs }
    }

    /// Projects one view's image features (see `Heads::project_view`).
    pub fn project(&self, features: Vec<f32>) -> Pending<ProjectedView> {
        let (done, pending) = Pending::new();
        // The thread lives as long as any handle; a send can only fail during process teardown, and then
        // the pending result reports the worker as stopped.
        let _ = self.jobs.send(Job::Project { features, done });
        pending
    }

    /// Computes one image's heatmap side (see `Heads::forward_maps`).
    pub fn maps(&self, request: MapsRequest) -> Pending<HeadsMaps> {
        let (done, pending) = Pending::new();
        let _ = self.jobs.send(Job::Maps { request, done });
        pending
    }
}

fn run(heads: &TrainedHeads, job: Job) {
    match job {
        Job::Project { features, done } => {
            let projected = guarded(|| heads.heads().project_view(&features).map_err(|e| e.to_string()));
            // The evaluation may have ended (cancelled) and dropped its receiver: nothing to deliver.
            let _ = done.send(projected);
        }
        Job::Maps { request, done } => {
            let _ = done.send(guarded(|| maps(heads, &request)));
        }
    }
}

/// A panic becomes an error for the request that caused it.
fn guarded<T>(job: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|_| Err("the trained heads panicked".into()))
}

fn maps(heads: &TrainedHeads, request: &MapsRequest) -> Result<HeadsMaps, String> {
    let tiling = &request.tiling;
    let n_tiles = tiling.n_tiles() as usize;
    let n_views = n_tiles + usize::from(tiling.has_thumbnail);
    if request.projected.len() != n_views || request.map_hidden.len() != n_views {
        return Err(format!(
            "expected {n_views} tile feature blocks and [MAP] states, captured {} and {}",
            request.projected.len(),
            request.map_hidden.len()
        ));
    }
    let name = |i: usize| if i < n_tiles { format!("tiles[{i}]") } else { "thumbnail".to_string() };
    // Already done: submitted before this job to this same thread.
    let projected = request
        .projected
        .iter()
        .enumerate()
        .map(|(i, p)| p.wait().map_err(|e| format!("{}.features: {e}", name(i))))
        .collect::<Result<Vec<_>, String>>()?;
    let view = |i: usize| ViewInput { map_hidden: request.map_hidden[i].as_slice(), features: &projected[i] };
    let input = MapsInput {
        grid_cols: tiling.grid.cols as usize,
        grid_rows: tiling.grid.rows as usize,
        tiles: (0..n_tiles).map(view).collect(),
        thumbnail: tiling.has_thumbnail.then(|| view(n_tiles)),
        out_width: request.out_size.0 as usize,
        out_height: request.out_size.1 as usize,
    };
    heads.heads().forward_maps(&input).map_err(|e| e.to_string())
}
