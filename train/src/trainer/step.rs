//! One optimisation step: forward, losses, backward, the gradients combined across replicas,
//! the optimiser (through the fp16 loss scaler when there is one). This is where a distributed
//! layer meets the loop ([`super::replicas`]).

use super::logs::StepLosses;
use super::run::Trainer;
use crate::loss::BatchLabels;
use anyhow::Result;
use facekit_data::Batch;
use tch::{Device, Tensor};

impl Trainer {
    /// Trains on `batch`; `None` when the loss is not finite on some replica (nothing is
    /// applied then, and the run stops).
    pub(super) fn step(&mut self, batch: &Batch) -> Result<Option<StepLosses>> {
        // Reseeding from the step makes dropout's random stream a function of the step alone,
        // so a resumed run draws exactly what the uninterrupted one drew.
        tch::manual_seed((self.cfg.seed as i64).wrapping_mul(1_000_003).wrapping_add(self.state.step as i64));
        let lr = self.schedule.lr();
        let xs = self.numerics.input(batch);
        let labels = labels_to_device(batch, self.numerics.device);
        let out = self.numerics.forward(&self.net, &xs, true)?;
        let losses = self.loss.losses(&out, &labels);
        let mut total = losses.total.double_value(&[]);
        if self.inject_nan == Some(self.state.step + 1) {
            total = f64::NAN;
        }
        if self.replicas.agree_any(!total.is_finite())? {
            return Ok(None);
        }
        self.opt.zero_grad();
        let clip = self.cfg.clip_grad_norm;
        match self.scaler.as_mut() {
            Some(scaler) => {
                // A step whose gradients overflowed is skipped but still counts as a step: its
                // loss is logged and the schedule sees it, as with PyTorch's GradScaler.
                scaler.scale(&losses.total).backward();
                self.replicas.reduce_gradients(&self.vs)?;
                // Clipping happens between unscaling and the step, on the true gradients.
                self.grad_norm = scaler.step_clipped(self.opt.as_mut(), lr, clip)?.1;
                scaler.update();
            }
            None => {
                losses.total.backward();
                self.replicas.reduce_gradients(&self.vs)?;
                self.grad_norm = clip.and_then(|max| super::clip::clip_network_grads(self.opt.as_ref(), max));
                self.opt.step(lr);
            }
        }
        self.state.step += 1;
        self.state.batch_in_epoch += 1;
        self.state.images_seen += batch.n as u64;
        self.state.lr = lr;
        self.final_loss = Some(total);
        let value = |t: &Option<Tensor>| t.as_ref().map(|t| t.double_value(&[]));
        Ok(Some(StepLosses { total, fr: value(&losses.fr), gender: value(&losses.gender), age: value(&losses.age) }))
    }
}

/// The batch's labels (class, gender, age; -1 unknown) as tensors on `device`.
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

    /// What another rank would do, and a record of what the trainer asked.
    #[derive(Default)]
    struct Spy {
        calls: Arc<Mutex<Vec<String>>>,
        others_say_yes: bool,
    }

    impl Replicas for Spy {
        fn world_size(&self) -> usize {
            2
        }
        fn rank(&self) -> usize {
            0
        }
        fn reduce_gradients(&mut self, vs: &VarStore) -> anyhow::Result<()> {
            let with_grad = vs.trainable_variables().iter().filter(|t| t.grad().defined()).count();
            self.calls.lock().unwrap().push(format!("reduce {with_grad}"));
            Ok(())
        }
        fn agree_any(&mut self, local: bool) -> anyhow::Result<bool> {
            self.calls.lock().unwrap().push(format!("agree {local}"));
            Ok(local || self.others_say_yes)
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
        let spy = Spy { calls: calls.clone(), others_say_yes: false };
        let mut tr = Trainer::new(config(t.path()), vec![], Default::default(), Box::new(spy)).unwrap();
        let batch = tr.loader.epoch(0, 0).next().unwrap().unwrap();
        let before = weights(&tr);
        let losses = tr.step(&batch).unwrap().expect("a finite loss");
        assert!(losses.total.is_finite() && losses.fr.is_some());
        assert_ne!(weights(&tr), before, "the optimiser changed the weights");
        assert_eq!((tr.state.step, tr.state.batch_in_epoch, tr.state.images_seen), (1, 1, 4));
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls[0], "agree false", "the loss is agreed before anything is applied");
        let reduced: usize = calls[1].strip_prefix("reduce ").unwrap().parse().unwrap();
        assert!(reduced > 0, "gradients exist when they are reduced: {calls:?}");
    }

    #[test]
    fn a_replica_that_diverged_stops_every_rank_before_the_step_is_applied() {
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let spy = Spy { calls: calls.clone(), others_say_yes: true };
        let mut tr = Trainer::new(config(t.path()), vec![], Default::default(), Box::new(spy)).unwrap();
        let batch = tr.loader.epoch(0, 0).next().unwrap().unwrap();
        let before = weights(&tr);
        assert!(tr.step(&batch).unwrap().is_none(), "another rank's NaN is this rank's too");
        assert_eq!(weights(&tr), before);
        assert_eq!(tr.state.step, 0);
        assert!(!calls.lock().unwrap().iter().any(|c| c.starts_with("reduce")));
    }

    #[test]
    fn a_stop_on_another_rank_ends_the_run_after_the_step_with_last_saved() {
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        // This rank's loss is finite and it was not asked to stop; another rank was. The first
        // agreement of a step is the loss, the second the stop request.
        struct StopElsewhere(u32);
        impl Replicas for StopElsewhere {
            fn world_size(&self) -> usize {
                2
            }
            fn rank(&self) -> usize {
                0
            }
            fn reduce_gradients(&mut self, _vs: &VarStore) -> anyhow::Result<()> {
                Ok(())
            }
            fn agree_any(&mut self, local: bool) -> anyhow::Result<bool> {
                self.0 += 1;
                Ok(local || self.0 == 2)
            }
        }
        let tr = Trainer::new(config(t.path()), vec![], Default::default(), Box::new(StopElsewhere(0))).unwrap();
        match tr.run().unwrap() {
            super::super::Outcome::Interrupted(s) => {
                assert_eq!((s.steps, s.last_checkpoint), (1, Some(1)));
            }
            other => panic!("expected Interrupted, got {other:?}"),
        }
    }
}
