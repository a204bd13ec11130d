//! One optimisation step: forward, losses, backward, the gradients combined across replicas,
//! the optimiser (through the fp16 loss scaler when there is one). This is where a distributed
//! layer meets the loop ([`super::replicas`]).

use super::amp;
use super::clip::clip_network_grads;
use super::pending::PendingStep;
use super::run::Trainer;
use anyhow::{Context, Result};
use facekit_data::Batch;
use tch::{Kind, Tensor};

/// A step's mean losses on the device, in f64 (tasks: fr, gender, age; `None` where untrained).
struct DeviceLosses {
    total: Tensor,
    tasks: [Option<Tensor>; 3],
}

impl DeviceLosses {
    /// `self + w · other`, task by task, as the host sum of the losses was computed before.
    fn plus(self, other: &DeviceLosses, w: f64) -> DeviceLosses {
        let add = |a: &Option<Tensor>, b: &Option<Tensor>| match (a, b) {
            (None, None) => None,
            (Some(a), None) => Some(a.shallow_clone()),
            (None, Some(b)) => Some(b * w),
            (Some(a), Some(b)) => Some(a + b * w),
        };
        let tasks = [
            add(&self.tasks[0], &other.tasks[0]),
            add(&self.tasks[1], &other.tasks[1]),
            add(&self.tasks[2], &other.tasks[2]),
        ];
        DeviceLosses { total: &self.total + &other.total * w, tasks }
    }
}

impl Trainer {
    /// Trains one step on the micro-batches `micro` (`--accumulate` of them; their gradients sum
    /// to those of one batch of all their images). Nothing is read back: the losses, gradient norm
    /// and skip flag wait on the device ([`super::pending`]) for the next read point, and a step
    /// whose loss or gradients are not finite on some rank applies nothing, on the device.
    pub(super) fn step(&mut self, micro: &[Batch]) -> Result<()> {
        // Reseeding from the step makes dropout's random stream a function of the step alone,
        // so a resumed run draws exactly what the uninterrupted one drew.
        tch::manual_seed((self.cfg.seed as i64).wrapping_mul(1_000_003).wrapping_add(self.state.step as i64));
        let lr = self.schedule.lr();
        self.opt.zero_grad();
        let w = 1.0 / micro.len() as f64;
        let mut mean: Option<DeviceLosses> = None;
        for (i, batch) in micro.iter().enumerate() {
            if let Some(p) = &self.loss.partial {
                // Partial FC's negatives are drawn per micro-batch, from its number alone.
                p.set_step(self.state.step * self.cfg.accumulate + i as u64);
            }
            let l = self.forward_backward(batch, i + 1 == micro.len(), micro.len())?;
            mean = Some(match mean {
                None => DeviceLosses { total: l.total.zeros_like(), tasks: [None, None, None] }.plus(&l, w),
                Some(m) => m.plus(&l, w),
            });
        }
        let mean = mean.context("a step needs at least one micro-batch")?;
        self.replicas.reduce_gradients(&self.vs)?;
        let found_inf = self.skip_flag(&mean.total)?;
        let norm = match self.cfg.clip_grad_norm {
            Some(max) => clip_network_grads(self.opt.as_ref(), max)?,
            None => None,
        };
        self.opt.step_unless(lr, &found_inf)?;
        if let Some(scaler) = self.scaler.as_mut() {
            // A skipped step still counts as a step: its loss is logged and the schedule sees it,
            // as with PyTorch's GradScaler.
            scaler.update_with(&found_inf);
        }
        self.state.step += 1;
        self.state.batch_in_epoch += micro.len() as u64;
        // Every rank's share of the global batch, which is the same size on every rank.
        self.state.images_seen += micro.iter().map(|b| b.n as u64).sum::<u64>() * self.replicas.world_size() as u64;
        self.state.lr = lr;
        self.queue(mean, norm, &found_inf);
        Ok(())
    }

    /// The step's skip flag ([1] f32 on the device): 1 when its loss or any gradient is inf or
    /// NaN on any rank (fp16's gradients unscaled on the way). One mechanism for every precision:
    /// the optimiser applies nothing when it is set, and nothing waits for the host.
    fn skip_flag(&mut self, loss: &Tensor) -> Result<Tensor> {
        let mut found_inf = loss.isfinite().logical_not().to_kind(Kind::Float).reshape([1]);
        let mut grads = self.opt.grads();
        match self.scaler.as_ref() {
            Some(scaler) => scaler.unscale_(&mut grads, &mut found_inf)?,
            // Multiplying by 1 is exact: only the check is wanted.
            None => {
                let one = Tensor::ones([1], (Kind::Float, found_inf.device()));
                amp::unscale_(&mut grads, &mut found_inf, &one)?
            }
        }
        // Ranks skip together: a sharded head's gradients differ from rank to rank.
        self.replicas.any_device(&found_inf)?;
        Ok(found_inf)
    }

    /// Keeps the step's values on the device for the next read; a schedule that does not need
    /// the loss moves on now, one that does (dlib's plateau rule) gets it when it is read.
    fn queue(&mut self, mean: DeviceLosses, norm: Option<Tensor>, found_inf: &Tensor) {
        let observe_loss = self.schedule.needs_loss();
        if !observe_loss {
            self.schedule.observe(f64::NAN);
        }
        let tasks = [mean.tasks[0].is_some(), mean.tasks[1].is_some(), mean.tasks[2].is_some()];
        self.pending.push(PendingStep {
            step: self.state.step,
            epoch: self.state.epoch,
            lr: self.state.lr,
            tasks,
            has_norm: norm.is_some(),
            observe_loss,
            row: PendingStep::row(&mean.total, &mean.tasks, norm.as_ref(), found_inf),
        });
    }

    /// Forward and backward of one micro-batch of `count`, its gradients added to those of the
    /// step's earlier ones (`sync`: the last, whose backward combines the ranks' gradients); its
    /// losses as device scalars (f64), not read.
    fn forward_backward(&mut self, batch: &Batch, sync: bool, count: usize) -> Result<DeviceLosses> {
        self.replicas.before_forward(sync)?;
        let (xs, labels) = self.feed.input(batch)?;
        let out = self.numerics.forward(&self.net, &xs, self.train_mode)?;
        let losses = self.loss.try_losses(&out, &labels)?;
        let mut total = losses.total;
        if self.inject_nan == Some(self.state.step + 1) {
            // As a real divergence: the loss and every gradient of this step become NaN.
            total = total * f64::NAN;
        }
        let value = |t: &Option<Tensor>| t.as_ref().map(|t| t.detach().to_kind(Kind::Double));
        let local = DeviceLosses {
            total: total.detach().to_kind(Kind::Double),
            tasks: [value(&losses.fr), value(&losses.gender), value(&losses.age)],
        };
        // The mean of the micro-batches' mean losses is the mean loss of all their images.
        let objective = if count > 1 { &total / count as f64 } else { total };
        self.replicas.before_backward(&[&objective], sync)?;
        let objective = match self.scaler.as_ref() {
            Some(scaler) => scaler.scale(&objective),
            None => objective,
        };
        // Errors raised while backward runs (a rank's gradient all-reduce failing) come out here.
        objective.f_backward().context("backward pass")?;
        Ok(local)
    }
}

/// The batch's labels (class, gender, age; -1 unknown) as fresh tensors on `device`: what the
/// feed's fixed label buffers must hold (its tests compare them).
#[cfg(test)]
pub(crate) fn labels_to_device(batch: &Batch, device: tch::Device) -> crate::loss::BatchLabels {
    let t = |v: &[i64]| Tensor::from_slice(v).to_device(device);
    crate::loss::BatchLabels { class: t(&batch.class), gender: t(&batch.gender), age: t(&batch.age) }
}

#[cfg(test)]
mod tests {
    use super::super::replicas::Replicas;
    use super::super::{TrainConfig, Trainer};
    use crate::model::{Arch, Task};
    use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
    use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
    use std::sync::{Arc, Mutex};
    use tch::nn::VarStore;

    /// `dir/ds`: 8 records of 32x32 noise in 2 classes.
    fn dataset(dir: &std::path::Path) {
        let mut w = DatasetWriter::create(DatasetPaths::new(dir.join("ds")), 1 << 20).unwrap();
        for i in 0..8u32 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                image::Rgb([(x * 7 + i * 31) as u8, (y * 5) as u8, (x * y + i) as u8])
            });
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
            entries: (0..2)
                .map(|c| LabelEntry { class_id: c, source: "x".into(), identity: format!("p{c}") })
                .collect(),
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
            Ok(values.to_vec())
        }
        fn mean_device(&mut self, t: &tch::Tensor) -> anyhow::Result<()> {
            self.record("mean on the device".into());
            if self.others_nan {
                // Every step's total loss (column 0) is NaN in the mean.
                let _ = t.select(1, 0).fill_(f64::NAN);
            }
            Ok(())
        }
        fn any_device(&mut self, flag: &tch::Tensor) -> anyhow::Result<()> {
            self.record("any on the device".into());
            if self.others_nan {
                let _ = flag.shallow_clone().fill_(1.0);
            }
            Ok(())
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

    /// The optimiser's state (momentum buffers, Adam moments) as sums of absolute values.
    fn optimiser_state(t: &Trainer) -> Vec<f64> {
        t.opt.state().iter().map(|(_, t)| t.abs().sum(tch::Kind::Double).double_value(&[])).collect()
    }

    #[test]
    fn a_step_reduces_gradients_after_backward_agrees_its_skip_flag_and_reads_nothing() {
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let spy = Spy { calls: calls.clone(), ..Spy::default() };
        let mut tr =
            Trainer::new(config(t.path()), vec![], Default::default(), Box::new(spy), Default::default()).unwrap();
        let batch = tr.loader.epoch(0, 0).next().unwrap().unwrap();
        let before = weights(&tr);
        calls.lock().unwrap().clear();
        tr.step(&[batch]).unwrap();
        assert_ne!(weights(&tr), before, "the optimiser changed the weights");
        // Images seen count both ranks' shares of the global batch.
        assert_eq!((tr.state.step, tr.state.batch_in_epoch, tr.state.images_seen), (1, 1, 8));
        let calls_now = calls.lock().unwrap().clone();
        assert_eq!(calls_now[..2], ["forward true", "backward true"], "{calls_now:?}");
        let reduced: usize = calls_now[2].strip_prefix("reduce ").unwrap().parse().unwrap();
        assert!(reduced > 0, "gradients exist when they are reduced: {calls_now:?}");
        assert_eq!(
            calls_now[3..],
            ["any on the device"],
            "the skip flag is agreed after the reduction, the losses not yet: {calls_now:?}"
        );
        assert_eq!(tr.host_reads.total(), 0, "the step read nothing back");
        assert!(tr.read_back().unwrap().is_none());
        assert_eq!(calls.lock().unwrap().last().unwrap(), "mean on the device");
        let l = tr.last_losses.expect("the read step's losses");
        assert!(l.total.is_finite() && l.fr.is_some());
        assert_eq!(tr.host_reads.by_step(), std::collections::BTreeMap::from([(1, 1)]), "one read at step 1");
    }

    #[test]
    fn a_replica_that_diverged_skips_the_update_on_every_rank_and_the_read_names_its_step() {
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let spy = Spy { others_nan: true, ..Spy::default() };
        let mut tr =
            Trainer::new(config(t.path()), vec![], Default::default(), Box::new(spy), Default::default()).unwrap();
        // This rank's share of an epoch is one batch.
        let first = tr.loader.epoch(0, 0).next().unwrap().unwrap();
        let second = tr.loader.epoch(1, 0).next().unwrap().unwrap();
        let (before, state_before) = (weights(&tr), optimiser_state(&tr));
        tr.step(&[first]).unwrap();
        tr.step(&[second]).unwrap();
        assert_eq!(weights(&tr), before, "another rank's NaN skipped both updates here");
        assert!(
            optimiser_state(&tr).iter().chain(&state_before).all(|s| *s == 0.0),
            "the optimiser's state did not move"
        );
        match tr.read_back().unwrap() {
            Some(super::super::run::End::Diverged { step, cause }) => {
                assert_eq!(step, 1, "the first step that diverged, not the read's");
                assert!(cause.contains("NaN"), "{cause}");
            }
            _ => panic!("the read must end the run as a divergence"),
        }
    }

    #[test]
    fn a_stop_on_another_rank_ends_the_run_after_the_step_with_last_saved() {
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        // This rank's loss is finite and it was not asked to stop; another rank was, during the
        // first step (its second agreement, after "a corrupt record?").
        let spy = Spy { stop_at: Some(2), ..Spy::default() };
        let tr = Trainer::new(config(t.path()), vec![], Default::default(), Box::new(spy), Default::default()).unwrap();
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
        let mut tr =
            Trainer::new(cfg, vec![], Default::default(), Box::new(super::super::SingleProcess), Default::default())
                .unwrap();
        tr.train_mode = false;
        for s in 0..steps {
            let mut epoch = tr.loader.epoch(s as u64, 0);
            let (micro, _) = tr.next_micro_batches(&mut epoch).unwrap().expect("a step's batches");
            assert_eq!(micro.len(), accumulate as usize);
            tr.step(&micro).unwrap();
            assert!(tr.read_back().unwrap().is_none(), "a finite loss");
            tr.state.batch_in_epoch = 0;
        }
        tr.vs
            .trainable_variables()
            .iter()
            .flat_map(|t| Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap())
            .collect()
    }

    #[test]
    fn accumulating_two_micro_batches_equals_one_step_on_twice_the_batch() {
        let _turn = facekit_testkit::rng_turn();
        let one = trained_weights(8, 1, 2);
        let two = trained_weights(4, 2, 2);
        let start = {
            let t = tempfile::tempdir().unwrap();
            dataset(t.path());
            let tr = Trainer::new(
                TrainConfig { batch_size: 8, ..config(t.path()) },
                vec![],
                Default::default(),
                Box::new(super::super::SingleProcess),
                Default::default(),
            )
            .unwrap();
            tr.vs
                .trainable_variables()
                .iter()
                .flat_map(|t| Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap())
                .collect::<Vec<_>>()
        };
        let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(diff(&one, &start) > 1e-3, "the steps moved the weights");
        let d = diff(&one, &two);
        assert!(d < 1e-5, "--accumulate 2 with batch 4 follows batch 8 (largest difference {d:e})");
    }
}
