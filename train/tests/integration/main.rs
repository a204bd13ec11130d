//! The training crate's tests, one binary: networks, losses, mixed precision, schedules, export,
//! the trainer's step and its divergence. libtorch's random generator is global: tests that draw from it take turns
//! (`facekit_testkit::rng_turn`).

mod amp;
mod dist_collectives;
mod dist_ddp;
mod dist_partial_fc;
mod dist_ranks;
mod dist_world;
mod eval_bin;
mod export;
mod loss_arcface;
mod loss_margin;
mod loss_multitask;
mod model_init;
mod model_iresnet;
mod model_mobilefacenet;
mod model_resnet;
mod optim_fused;
mod optim_reference;
mod optimisation_config;
mod schedule_dlib_reference;
mod schedule_poly_reference;
mod schedule_shapes;
mod step_host_reads;
mod trainer_divergence;
mod trainer_events;
