//! One optimisation step: forward, losses, backward, the gradients combined across replicas,
//! the optimiser (through the fp16 loss scaler when there is one). This is where a distributed
//! layer meets the loop ([`super::replicas`]).

use super::logs::StepLosses;
use super::run::Trainer;
use crate::loss::BatchLabels;
use anyhow::{Context, Result};
use facekit_data::Batch;
use tch::{Device, Tensor};

impl Trainer {
    /// Trains one step on the micro-batches `micro` (`--accumulate` of them; their gradients sum
    /// to those of one batch of all their images); `None` when the loss is not finite on some
    /// replica (nothing is applied then, and the run stops).
    pub(super) fn step(&mut self, micro: &[Batch]) -> Result<Option<StepLosses>> {
        // Reseeding from the step makes dropout's random stream a function of the step alone,
        // so a resumed run draws exactly what the uninterrupted one drew.
        tch::manual_seed((self.cfg.seed as i64).wrapping_mul(1_000_003).wrapping_add(self.state.step as i64));
        let lr = self.schedule.lr();
        self.opt.zero_grad();
        let mut mean = StepLosses { total: 0.0, fr: None, gender: None, age: None };
        for (i, batch) in micro.iter().enumerate() {
            if let Some(p) = &self.loss.partial {
            // Partial FC's negatives are drawn per micro-batch, from its number alone.
            p.set_step(self.state.step * self.cfg.accumulate + i as u64);
        }
        let Some(l) = self.forward_backward(batch, i + 1 == micro.len(), micro.len())? else { return Ok(None) };
            mean = mean.plus(&l, 1.0 / micro.len() as f64);
        }
        self.replicas.reduce_gradients(&self.vs)?;
        let clip = self.cfg.clip_grad_norm;
        match self.scaler.as_mut() {
            Some(scaler) => {
                // A step whose gradients overflowed is skipped but still counts as a step: its
                // loss is logged and the schedule sees it, as with PyTorch's GradScaler. Ranks
                // skip together: a sharded head's gradients differ from rank to rank.
                let replicas = &mut self.replicas;
                let mut agree = |overflow: bool| replicas.agree_any(overflow);
                self.grad_norm = scaler.step_clipped(self.opt.as_mut(), lr, clip, &mut agree)?.1;
                scaler.update();
            }
            None => {
                self.grad_norm = clip.and_then(|max| super::clip::clip_network_grads(self.opt.as_ref(), max));
                self.opt.step(lr);
            }
        }
        self.state.step += 1;
        self.state.batch_in_epoch += micro.len() as u64;
        // Every rank's share of the global batch, which is the same size on every rank.
        self.state.images_seen += micro.iter().map(|b| b.n as u64).sum::<u64>() * self.replicas.world_size() as u64;
        self.state.lr = lr;
        self.final_loss = Some(mean.total);
        Ok(Some(mean))
    }

    /// Forward and backward of one micro-batch of `count`, its gradients added to those of the
    /// step's earlier ones (`sync`: the last, whose backward combines the ranks' gradients); the
    /// losses as the mean over the ranks, `None` when that is not finite (backward is not run).
    fn forward_backward(&mut self, batch: &Batch, sync: bool, count: usize) -> Result<Option<StepLosses>> {
        self.replicas.before_forward(sync)?;
        let (xs, labels) = self.feed.input(batch)?;
        let out = self.numerics.forward(&self.net, &xs, self.train_mode)?;
        let losses = self.loss.try_losses(&out, &labels)?;
        let value = |t: &Option<Tensor>| t.as_ref().map(|t| t.double_value(&[]));
        let mut local = StepLosses { total: losses.total.double_value(&[]), fr: value(&losses.fr), gender: value(&losses.gender), age: value(&losses.age) };
        if self.inject_nan == Some(self.state.step + 1) {
            local.total = f64::NAN;
        }
        // One collective for the four numbers: the logged loss is the whole global batch's, and a
        // NaN on any rank is a NaN in the mean, so every rank stops together.
        let m = self.replicas.mean(&[local.total, local.fr.unwrap_or(0.0), local.gender.unwrap_or(0.0), local.age.unwrap_or(0.0)])?;
        if !m[0].is_finite() {
            return Ok(None);
        }
        let mean = StepLosses { total: m[0], fr: local.fr.map(|_| m[1]), gender: local.gender.map(|_| m[2]), age: local.age.map(|_| m[3]) };
        // The mean of the micro-batches' mean losses is the mean loss of all their images.
        let objective = if count > 1 { &losses.total / count as f64 } else { losses.total.shallow_clone() };
        self.replicas.before_backward(&[&objective], sync)?;
        let objective = match self.scaler.as_ref() {
            Some(scaler) => scaler.scale(&objective),
            None => objective,
        };
        // Errors raised while backward runs (a rank's gradient all-reduce failing) come out here.
        objective.f_backward().context("backward pass")?;
        Ok(Some(mean))
    }
}

/// The batch's labels (class, gender, age; -1 unknown) as fresh tensors on `device`: what the
/// feed's fixed label buffers must hold (its tests compare them).
pub fn labels_to_device(batch: &Batch, device: Device) -> BatchLabels {
    let t = |v: &[i64]| Tensor::from_slice(v).to_device(device);
    BatchLabels { class: t(&batch.class), gender: t(&batch.gender), age: t(&batch.age) }
}

#[cfg(test)]
mod tests {
    use super::super::replicas::Replicas;
    use super::super::{Trainer, TrainConfig};
    use crate::model::{Arch, Task};
    use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
    use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
    use std::sync::{Arc, Mutex};
    use tch::nn::VarStore;

    /// `dir/ds`: 8 records of 32x32 noise in 2 classes.
    fn dataset(dir: &std::path::Path) {
        let mut w = DatasetWriter::create(DatasetPaths::new(dir.join("ds")), 1 << 20).unwrap();
        for i in 0..8u32 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 7 + i * 31) as u8, (y * 5) as u8, (x * y + i) as u8]));
            w.push(&Record {
                labels: Labels { class_id: Some(i % 2), source: 0, gender: None, age: None },
                encoding: Encoding::Raw,
                width: 32,
                height: 32,
                origin_sha256: [0; 16],
                path: format!("x/{i}"),
                data: img.into_raw(),
            })
            .unwrap();
        }
        let labels = LabelMap {
            entries: (0..2).map(|c| LabelEntry { class_id: c, source: "x".into(), identity: format!("p{c}") }).collect(),
        };
        let enc = EncodingInfo { format: Encoding::Raw, quality: None, chroma: None, width: 32, height: 32 };
        let source = SourceInfo { id: 0, name: "x".into(), class_offset: 0, classes: 2, records: 8 };
        w.finish(Manifest::new(2, vec![source], None, enc), &labels).unwrap();
    }

    fn config(dir: &std::path::Path) -> TrainConfig {
        TrainConfig {
            task: Task::Fr,
            train_sets: vec!["ds".into()],
            data_dir: dir.to_path_buf(),
            arch: Arch::Tiny,
            image_size: 32,
            batch_size: 4,
            workers: 1,
            threads: 1,
            device: "cpu".into(),
            max_steps: Some(3),
            model_dir: dir.join("Model"),
            run_name: Some("r".into()),
            ..TrainConfig::default()
        }
    }

    /// What another rank would do, and a record of what the trainer asked: another rank whose
    /// loss is NaN (`others_nan`), or that asks to stop at the `stop_at`-th agreement.
    #[derive(Default)]
    struct Spy {
        calls: Arc<Mutex<Vec<String>>>,
        others_nan: bool,
        stop_at: Option<usize>,
        agreements: usize,
    }

    impl Spy {
        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl Replicas for Spy {
        fn world_size(&self) -> usize {
            2
        }
        fn rank(&self) -> usize {
            0
        }
        fn attach(&mut self, _vs: &VarStore, _local: &[String], _find_unused: bool) -> anyhow::Result<()> {
            self.record("attach".into());
            Ok(())
        }
        fn before_forward(&mut self, sync: bool) -> anyhow::Result<()> {
            self.record(format!("forward {sync}"));
            Ok(())
        }
        fn before_backward(&mut self, _outputs: &[&tch::Tensor], sync: bool) -> anyhow::Result<()> {
            self.record(format!("backward {sync}"));
            Ok(())
        }
        fn reduce_gradients(&mut self, vs: &VarStore) -> anyhow::Result<()> {
            let with_grad = vs.trainable_variables().iter().filter(|t| t.grad().defined()).count();
            self.record(format!("reduce {with_grad}"));
            Ok(())
        }
        fn agree_any(&mut self, local: bool) -> anyhow::Result<bool> {
            self.agreements += 1;
            self.record(format!("agree {local}"));
            Ok(local || self.stop_at == Some(self.agreements))
        }
        fn mean(&mut self, values: &[f64]) -> anyhow::Result<Vec<f64>> {
            self.record("mean".into());
            let mut v = values.to_vec();
            if self.others_nan {
                v[0] = f64::NAN;
            }
            Ok(v)
        }
        fn sync_buffers(&mut self, _vs: &VarStore) -> anyhow::Result<()> {
            self.record("buffers".into());
            Ok(())
        }
        fn barrier(&mut self) -> anyhow::Result<()> {
            self.record("barrier".into());
            Ok(())
        }
        fn group(&self) -> anyhow::Result<crate::dist::ProcessGroup> {
            crate::dist::ProcessGroup::solo(std::time::Duration::from_secs(10))
        }
    }

    /// The learned parameters (batch norm's running statistics move with any forward pass in
    /// training mode, applied or not).
    fn weights(t: &Trainer) -> Vec<f64> {
        t.vs.trainable_variables().iter().map(|t| t.abs().sum(tch::Kind::Double).double_value(&[])).collect()
    }

    #[test]
    fn a_step_reduces_gradients_after_backward_applies_them_and_moves_on() {
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let spy = Spy { calls: calls.clone(), ..Spy::default() };
        let mut tr = Trainer::new(config(t.path()), vec![], Default::default(), Box::new(spy)).unwrap();
        let batch = tr.loader.epoch(0, 0).next().unwrap().unwrap();
        let before = weights(&tr);
        calls.lock().unwrap().clear();
        let losses = tr.step(&[batch]).unwrap().expect("a finite loss");
        assert!(losses.total.is_finite() && losses.fr.is_some());
        assert_ne!(weights(&tr), before, "the optimiser changed the weights");
        // Images seen count both ranks' shares of the global batch.
        assert_eq!((tr.state.step, tr.state.batch_in_epoch, tr.state.images_seen), (1, 1, 8));
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls[..3], ["forward true", "mean", "backward true"], "the loss is agreed before backward: {calls:?}");
        let reduced: usize = calls[3].strip_prefix("reduce ").unwrap().parse().unwrap();
        assert!(reduced > 0, "gradients exist when they are reduced: {calls:?}");
    }

    #[test]
    fn a_replica_that_diverged_stops_every_rank_before_the_step_is_applied() {
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let spy = Spy { calls: calls.clone(), others_nan: true, ..Spy::default() };
        let mut tr = Trainer::new(config(t.path()), vec![], Default::default(), Box::new(spy)).unwrap();
        let batch = tr.loader.epoch(0, 0).next().unwrap().unwrap();
        let before = weights(&tr);
        assert!(tr.step(&[batch]).unwrap().is_none(), "another rank's NaN is this rank's too");
        assert_eq!(weights(&tr), before);
        assert_eq!(tr.state.step, 0);
        assert!(!calls.lock().unwrap().iter().any(|c| c.starts_with("reduce") || c.starts_with("backward")));
    }

    #[test]
    fn a_stop_on_another_rank_ends_the_run_after_the_step_with_last_saved() {
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        // This rank's loss is finite and it was not asked to stop; another rank was, during the
        // first step (its second agreement, after "a corrupt record?").
        let spy = Spy { stop_at: Some(2), ..Spy::default() };
        let tr = Trainer::new(config(t.path()), vec![], Default::default(), Box::new(spy)).unwrap();
        match tr.run().unwrap() {
            super::super::Outcome::Interrupted(s) => {
                assert_eq!((s.steps, s.last_checkpoint), (1, Some(1)));
            }
            other => panic!("expected Interrupted, got {other:?}"),
        }
    }

    fn trained_weights(batch_size: usize, accumulate: u64, steps: usize) -> Vec<f64> {
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let cfg = TrainConfig { batch_size, accumulate, max_steps: None, ..config(t.path()) };
        let mut tr = Trainer::new(cfg, vec![], Default::default(), Box::new(super::super::SingleProcess)).unwrap();
        tr.train_mode = false;
        for s in 0..steps {
            let mut epoch = tr.loader.epoch(s as u64, 0);
            let (micro, _) = tr.next_micro_batches(&mut epoch).unwrap().expect("a step's batches");
            assert_eq!(micro.len(), accumulate as usize);
            tr.step(&micro).unwrap().expect("a finite loss");
            tr.state.batch_in_epoch = 0;
        }
        tr.vs.trainable_variables().iter().flat_map(|t| Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap()).collect()
    }

    #[test]
    fn accumulating_two_micro_batches_equals_one_step_on_twice_the_batch() {
        let _turn = facekit_testkit::rng_turn();
        let one = trained_weights(8, 1, 2);
        let two = trained_weights(4, 2, 2);
        let start = {
            let t = tempfile::tempdir().unwrap();
            dataset(t.path());
            let tr = Trainer::new(TrainConfig { batch_size: 8, ..config(t.path()) }, vec![], Default::default(), Box::new(super::super::SingleProcess)).unwrap();
            tr.vs.trainable_variables().iter().flat_map(|t| Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap()).collect::<Vec<_>>()
        };
        let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(diff(&one, &start) > 1e-3, "the steps moved the weights");
        let d = diff(&one, &two);
        assert!(d < 1e-5, "--accumulate 2 with batch 4 follows batch 8 (largest difference {d:e})");
    }
}
