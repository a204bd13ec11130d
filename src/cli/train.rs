//! `facekit train`: train a face network on packed shards (see docs/TRAINING.md).

use crate::train::config::TrainConfig;
use crate::train::run::{self, Outcome, Summary};
use anyhow::Result;
use std::process::ExitCode;

/// Arguments of `facekit train`.
pub type TrainArgs = TrainConfig;

/// Trains; exit 0 when finished or stopped by Ctrl-C (after saving), 1 on a NaN loss or corrupt data.
pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let command_line: Vec<String> = std::env::args().collect();
    Ok(match run::train(args, command_line)? {
        Outcome::Finished(s) => {
            print_summary("finished", &s);
            ExitCode::SUCCESS
        }
        Outcome::Interrupted(s) => {
            print_summary("interrupted by Ctrl-C; continue with --resume", &s);
            ExitCode::SUCCESS
        }
        Outcome::Diverged { step, summary } => {
            eprintln!(
                "facekit train: error: the loss became NaN or infinite at step {step}; stopped without saving it. \
                 The last good checkpoint is {} (step {}). Try a lower --lr or more --warmup-steps.",
                summary.run_dir.join("checkpoints/last").display(),
                summary.steps
            );
            ExitCode::from(1)
        }
        Outcome::CorruptData { message, summary } => {
            eprintln!(
                "facekit train: error: corrupt training data: {message}\n  \
                 (verify it with `facekit verify-shard`, or skip such records with --skip-corrupt; \
                 checkpoint of step {} kept in {})",
                summary.steps,
                summary.run_dir.join("checkpoints/last").display()
            );
            ExitCode::from(1)
        }
    })
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
    println!("    weights:        {}", s.run_dir.join("checkpoints/{last,best}/model.safetensors").display());
    println!("    logs:           {}, {}", s.run_dir.join("train_log.jsonl").display(), s.run_dir.join("loss_debug/losses.tsv").display());
    println!("    curves:         {}", s.run_dir.join("curves.png").display());
}
