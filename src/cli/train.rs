//! `facekit train`: train a face network on packed shards (see docs/TRAINING.md).

use crate::train::config::TrainConfig;
use crate::train::run::{self, Outcome, Summary};
use crate::signals::StopFlag;
use anyhow::Result;
use std::process::ExitCode;

/// Arguments of `facekit train`.
pub type TrainArgs = TrainConfig;

/// Trains. Exit codes: 0 finished; 1 the loss diverged or the data is corrupt; 2 a usage or I/O
/// error; 128 + N when signal N stopped it after saving `last` (130 Ctrl-C, 143 SIGTERM, 129
/// SIGHUP): continue with `--resume`.
pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let command_line: Vec<String> = std::env::args().collect();
    // Finish the step in hand and save it, instead of dying mid-write.
    let stop = StopFlag::from_signals()?;
    Ok(match run::train(args, command_line, stop.clone())? {
        Outcome::Finished(s) => {
            print_summary("finished", &s);
            ExitCode::SUCCESS
        }
        Outcome::Interrupted(s) => {
            print_summary(&format!("stopped by {}; `last` holds every step, continue with --resume", stop.describe()), &s);
            ExitCode::from(stop.exit_code())
        }
        Outcome::Diverged { step, summary } => {
            eprintln!(
                "facekit train: error: the loss became NaN or infinite at step {step}; stopped without saving it. {} \
                 Try a lower --lr or more --warmup-steps.",
                last_checkpoint(&summary)
            );
            ExitCode::from(1)
        }
        Outcome::CorruptData { message, summary } => {
            eprintln!(
                "facekit train: error: corrupt training data: {message}\n  \
                 (verify it with `facekit verify-shard`, or skip such records with --skip-corrupt.) {}",
                last_checkpoint(&summary)
            );
            ExitCode::from(1)
        }
    })
}

/// Names the checkpoint a user can continue from, only if one was really written.
fn last_checkpoint(s: &Summary) -> String {
    match s.last_checkpoint {
        Some(step) => format!("The last good checkpoint is {} (step {step}).", s.run_dir.join("checkpoints/last").display()),
        None => "No checkpoint had been written yet (the first comes after --checkpoint-every steps).".into(),
    }
}

fn print_summary(how: &str, s: &Summary) {
    println!("Training {how}.");
    println!("  steps:            {}", s.steps);
    match s.final_loss {
        Some(l) => println!("  final loss:       {l:.4}"),
        None => println!("  final loss:       - (no step run)"),
    }
    match &s.best {
        Some(b) => println!("  best {}: {:.4} (step {})", b.name, b.value, b.step),
        None => println!("  best metric:      - (no validation)"),
    }
    println!("  throughput:       {:.1} images/s", s.images_per_second);
    println!("  data wait:        {:.1} ms/step", s.mean_data_wait_ms);
    println!("  skipped corrupt:  {}", s.skipped_corrupt);
    if let Some(l) = &s.loss_scaling {
        println!("  loss scale:       {} ({} steps skipped for inf/NaN gradients)", l.scale, l.skipped_steps);
    }
    println!("  run folder:       {}", s.run_dir.display());
    let weights = match (s.last_checkpoint.is_some(), s.has_best) {
        (true, true) => s.run_dir.join("checkpoints/{last,best}/model.safetensors").display().to_string(),
        (true, false) => s.run_dir.join("checkpoints/last/model.safetensors").display().to_string(),
        (false, true) => s.run_dir.join("checkpoints/best/model.safetensors").display().to_string(),
        (false, false) => "- (no checkpoint written)".into(),
    };
    println!("    weights:        {weights}");
    println!("    logs:           {}, {}", s.run_dir.join("train_log.jsonl").display(), s.run_dir.join("loss_debug/losses.tsv").display());
    println!("    curves:         {}", s.run_dir.join("curves.png").display());
}
