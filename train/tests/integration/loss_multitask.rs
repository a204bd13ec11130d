//! Multi-task losses mask unlabelled records: a task with no label in the batch contributes 0
//! and no gradient, and a mixed batch's loss equals the loss over its labelled rows alone.

use facekit_train::loss::{expected_age, BatchLabels, FaceLoss, HeadConfig, TaskWeights};
use facekit_train::model::{Arch, FaceNet, NetConfig, Task};
use tch::nn;
use tch::{Device, Kind, Tensor};

fn setup() -> (nn::VarStore, FaceNet, FaceLoss) {
    tch::manual_seed(5);
    let cfg = NetConfig { arch: Arch::Tiny, image_size: 64, task: Task::Multi, num_classes: 6, ..NetConfig::default() };
    let head = HeadConfig { task_weights: TaskWeights { fr: 1.0, gender: 0.5, age: 0.25 }, ..HeadConfig::default() };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &cfg).unwrap();
    let loss = FaceLoss::new(&vs.root(), &cfg, &head).unwrap();
    (vs, net, loss)
}

fn images(n: i64) -> Tensor {
    Tensor::rand([n, 3, 64, 64], (Kind::Float, Device::Cpu)) * 2.0 - 1.0
}

fn labels(class: &[i64], gender: &[i64], age: &[i64]) -> BatchLabels {
    BatchLabels { class: Tensor::from_slice(class), gender: Tensor::from_slice(gender), age: Tensor::from_slice(age) }
}

#[test]
fn batch_without_gender_labels_gives_zero_gender_loss_and_no_gender_gradient() {
    let _turn = facekit_testkit::rng_turn();
    let (vs, net, loss) = setup();
    let out = net.forward(&images(4), true);
    let l = loss.losses(&out, &labels(&[0, 1, 2, 3], &[-1, -1, -1, -1], &[20, 35, -1, 60]));
    assert_eq!(l.gender.as_ref().unwrap().double_value(&[]), 0.0);
    assert_eq!(l.counts.gender.int64_value(&[]), 0);
    assert!(l.total.double_value(&[]).is_finite());
    l.total.backward();
    let vars = vs.variables();
    let g = vars["gender_head.weight"].grad();
    assert!(!g.defined() || g.abs().max().double_value(&[]) == 0.0, "gender head got gradient {g}");
    // The other heads did learn from this batch.
    assert!(vars["age_head.weight"].grad().abs().max().double_value(&[]) > 0.0);
    assert!(vars["arcface.weight"].grad().abs().max().double_value(&[]) > 0.0);
}

#[test]
fn batch_with_no_labels_at_all_gives_a_zero_total_that_backpropagates() {
    let _turn = facekit_testkit::rng_turn();
    let (_vs, net, loss) = setup();
    let out = net.forward(&images(3), true);
    let l = loss.losses(&out, &labels(&[-1; 3], &[-1; 3], &[-1; 3]));
    assert_eq!(l.total.double_value(&[]), 0.0);
    l.total.backward();
}

#[test]
fn mixed_batch_loss_equals_the_loss_over_labelled_rows_only() {
    let _turn = facekit_testkit::rng_turn();
    let (_vs, net, loss) = setup();
    let xs = images(6);
    // Eval mode: BN running statistics and no dropout, so each row's output is independent of
    // which other rows share its batch.
    let full = net.forward(&xs, false);
    let l = loss.losses(&full, &labels(&[0, -1, 2, 5, -1, 1], &[1, 0, -1, -1, 1, -1], &[-1, 33, 7, -1, 80, 101]));
    let sub = |rows: &[i64]| net.forward(&xs.index_select(0, &Tensor::from_slice(rows)), false);
    let fr_only = loss.losses(&sub(&[0, 2, 3, 5]), &labels(&[0, 2, 5, 1], &[-1; 4], &[-1; 4]));
    let gender_only = loss.losses(&sub(&[0, 1, 4]), &labels(&[-1; 3], &[1, 0, 1], &[-1; 3]));
    let age_only = loss.losses(&sub(&[1, 2, 4, 5]), &labels(&[-1; 4], &[-1; 4], &[33, 7, 80, 101]));
    let close = |a: &Option<Tensor>, b: &Option<Tensor>| {
        let (a, b) = (a.as_ref().unwrap().double_value(&[]), b.as_ref().unwrap().double_value(&[]));
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        b
    };
    let fr = close(&l.fr, &fr_only.fr);
    let gender = close(&l.gender, &gender_only.gender);
    let age = close(&l.age, &age_only.age);
    let count = |t: &Tensor| t.int64_value(&[]);
    assert_eq!((count(&l.counts.fr), count(&l.counts.gender), count(&l.counts.age)), (4, 3, 4));
    let total = l.total.double_value(&[]);
    let want = fr + 0.5 * gender + 0.25 * age;
    assert!((total - want).abs() < 1e-4 * want, "total {total} vs weighted sum {want}");
}

#[test]
fn expected_age_is_the_softmax_weighted_mean_bin() {
    let _turn = facekit_testkit::rng_turn();
    let logits = Tensor::from_slice(&[0.0f32, 1.0, 2.0, -1.0]).view([1, 4]);
    let w: Vec<f64> = [0.0f64, 1.0, 2.0, -1.0].iter().map(|x| x.exp()).collect();
    let want = w.iter().enumerate().map(|(i, p)| i as f64 * p).sum::<f64>() / w.iter().sum::<f64>();
    let got = expected_age(&logits).double_value(&[0]);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}
